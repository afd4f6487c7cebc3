package server_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestUncleanPathsAnswer404WithoutEchoingTheToken: issue 24's sixth
// defect. net/http's mux answers a path that is not clean (//ws, /./ws)
// with a redirect whose Location and body repeat the query — the token
// with it. Such paths now answer 404, and no answer repeats the
// credential, on a fresh connection and on a keep-alive one.
func TestUncleanPathsAnswer404WithoutEchoingTheToken(t *testing.T) {
	ts := start(t, nil)
	const secret = "SECRET-TOKEN-3f9a"
	for _, target := range []string{
		"//ws?token=" + secret,
		"/./ws?token=" + secret,
		"/ws/../ws?token=" + secret,
		"//api/history?token=" + secret,
		"/api?token=" + secret,
		"//healthz?token=" + secret,
	} {
		t.Run(target, func(t *testing.T) {
			for _, keepAlive := range []bool{false, true} {
				req := "GET " + target + " HTTP/1.1\r\nHost: " + ts.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
					"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
				if keepAlive { // an earlier request: the net/http path
					req = "GET /healthz HTTP/1.1\r\nHost: " + ts.addr + "\r\n\r\n" + req
				}
				c, br := rawSend(t, ts, []byte(req))
				if keepAlive {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
				}
				resp, err := http.ReadResponse(bufio.NewReader(br), nil)
				if err != nil {
					t.Fatalf("keep-alive %v: %v", keepAlive, err)
				}
				body, _ := io.ReadAll(resp.Body)
				c.Close()
				var head strings.Builder
				_ = resp.Header.Write(&head)
				if resp.StatusCode != http.StatusNotFound || strings.Contains(head.String(), secret) || strings.Contains(string(body), secret) {
					t.Fatalf("keep-alive %v: %d\n%s\n%s", keepAlive, resp.StatusCode, head.String(), body)
				}
			}
		})
	}
}

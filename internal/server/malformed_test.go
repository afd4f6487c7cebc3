package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestMalformedUpgradeHeadsMeanOneThing: issue 24's fifth defect. The fast
// upgrade path (a fresh connection's first request) parsed heads otherwise
// than net/http (an upgrade behind another request on a keep-alive
// connection): of two Origins the last won on one and the first on the
// other, two Hosts and a NUL in a value were accepted, and a head with
// bare-LF line endings got no answer until the head timeout. One table of
// requests runs on both paths, and each gets the same answer, at once: a
// field that must be single given twice, a control character or a
// malformed header line is 400 on both; LF alone ends a line on both, as
// net/http reads it.
func TestMalformedUpgradeHeadsMeanOneThing(t *testing.T) {
	ts := start(t, nil)
	tok := url.QueryEscape(token(t, "alice", ""))
	line := "GET /ws?token=" + tok + " HTTP/1.1\r\n"
	good := "Host: " + ts.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, c := range []struct {
		name string
		head string
		want int
	}{
		{"well formed", line + good + "\r\n", http.StatusSwitchingProtocols},
		{"good origin", line + good + "Origin: http://" + ts.addr + "\r\n\r\n", http.StatusSwitchingProtocols},
		{"two origins, evil last", line + good + "Origin: http://" + ts.addr + "\r\nOrigin: http://evil.example\r\n\r\n", http.StatusBadRequest},
		{"two origins, evil first", line + good + "Origin: http://evil.example\r\nOrigin: http://" + ts.addr + "\r\n\r\n", http.StatusBadRequest},
		{"two hosts", line + good + "Host: evil.example\r\n\r\n", http.StatusBadRequest},
		{"two upgrades", line + good + "Upgrade: websocket\r\n\r\n", http.StatusBadRequest},
		{"two keys", line + good + "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n", http.StatusBadRequest},
		{"NUL in a value", line + good + "X-Note: a\x00b\r\n\r\n", http.StatusBadRequest},
		{"escape in a value", line + good + "X-Note: a\x1bb\r\n\r\n", http.StatusBadRequest},
		// LF alone ends a line for net/http (RFC 9112 §2.2 lets a recipient
		// take it for CRLF), and so for both paths, at once: answered, with
		// 101, never left to the head timeout.
		{"bare LF line endings", strings.ReplaceAll(line+good+"\r\n", "\r\n", "\n"), http.StatusSwitchingProtocols},
		{"one bare LF", line + strings.Replace(good, "Connection: Upgrade\r\n", "Connection: Upgrade\n", 1) + "\r\n", http.StatusSwitchingProtocols},
		{"bare LF after the request line only", strings.Replace(line, "\r\n", "\n", 1) + good + "\r\n", http.StatusSwitchingProtocols},
		{"bare LF ending the head", line + good + "\n", http.StatusSwitchingProtocols},
		// A CR not followed by LF is no line end (RFC 9112 §2.2): a control
		// character in the value, 400 on both.
		{"bare CR in a value", line + good + "X-Note: a\rb\r\n\r\n", http.StatusBadRequest},
		{"bare CR as a line end", line + strings.ReplaceAll(good, "\r\n", "\r") + "\r\n\r\n", http.StatusBadRequest},
		{"space before the colon", line + good + "Origin : http://evil.example\r\n\r\n", http.StatusBadRequest},
		{"no colon", line + good + "Origin http://evil.example\r\n\r\n", http.StatusBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, keepAlive := range []bool{false, true} {
				if got := answer(t, ts, c.head, keepAlive); got != c.want {
					t.Errorf("keep-alive %v: %d, want %d", keepAlive, got, c.want)
				}
			}
		})
	}
}

// answer sends head, on a fresh connection or behind a /healthz request on
// a keep-alive one, and returns the status of its answer, which must come
// well within the head timeout.
func answer(t *testing.T, ts *testServer, head string, keepAlive bool) int {
	t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(nc)
	if keepAlive {
		if _, err := nc.Write([]byte("GET /healthz HTTP/1.1\r\nHost: " + ts.addr + "\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	if _, err := nc.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return resp.StatusCode
}

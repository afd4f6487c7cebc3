package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
)

// TestUpgradeLongToken: a token larger than the upgrader's 4 KiB read buffer
// (here ≈ 10 KiB, in the Authorization header) still connects.
func TestUpgradeLongToken(t *testing.T) {
	ts := start(t, nil)
	chans := make([]string, 400)
	for i := range chans {
		chans[i] = fmt.Sprintf("docs:team-%04d-*", i)
	}
	tok, err := auth.Mint([]byte(testSecret), auth.Identity{UserID: "long", Channels: chans}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) < 8<<10 {
		t.Fatalf("token is only %d bytes", len(tok))
	}
	c := ts.dialURL(ts.wsURL(""), http.Header{"Authorization": {"Bearer " + tok}})
	if c.Connected["userId"] != "long" {
		t.Fatalf("connected = %v", c.Connected)
	}
}

// TestUpgradeHeadInPieces: a request head that arrives a few bytes at a time
// is read until complete.
func TestUpgradeHeadInPieces(t *testing.T) {
	ts := start(t, nil)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := upgradeRequest(ts, "token="+url.QueryEscape(token(t, "slow", "")), "")
	for i := 0; i < len(req); i += 7 {
		if _, err := c.Write([]byte(req[i:min(i+7, len(req))])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("response %v, %v", resp, err)
	}
	if m := readJSON(t, br); m["type"] != "connected" || m["userId"] != "slow" {
		t.Fatalf("got %v", m)
	}
}

// TestRefusedUpgradeAnswer: a refused upgrade gets a complete JSON error
// response and the connection is closed after it.
func TestRefusedUpgradeAnswer(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.AllowedOrigins = []string{"https://app.example"} })
	for name, tc := range map[string]struct {
		query, headers string
		status         int
		code           string
	}{
		"bad token":  {"token=nope", "", http.StatusUnauthorized, "unauthorized"},
		"no token":   {"", "", http.StatusUnauthorized, "unauthorized"},
		"bad origin": {"token=" + url.QueryEscape(token(t, "o", "")), "Origin: https://evil.example\r\n", http.StatusForbidden, "origin_not_allowed"},
	} {
		t.Run(name, func(t *testing.T) {
			_, br := rawSend(t, ts, []byte(upgradeRequest(ts, tc.query, tc.headers)))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" ||
				!strings.Contains(string(body), `"error":"`+tc.code+`"`) {
				t.Fatalf("got %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("connection not closed after the refusal: %v", err)
			}
		})
	}
}

// TestMalformedUpgradeRequest: an upgrade of the WebSocket path whose
// request line the upgrader cannot parse gets a 400 with the API's JSON
// error, not a silent close.
func TestMalformedUpgradeRequest(t *testing.T) {
	ts := start(t, nil)
	req := upgradeRequest(ts, "token="+url.QueryEscape(token(t, "m", "")), "")
	line, rest, _ := strings.Cut(req, "\r\n")
	for _, bad := range []string{
		strings.Replace(line, "HTTP/1.1", "HTTP/1. 1", 1),
		strings.Replace(line, "HTTP/1.1", "TTTP/1.1", 1),
		line + " ",
	} {
		_, br := rawSend(t, ts, []byte(bad+"\r\n"+rest))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", bad, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"error":"bad_request"`) {
			t.Fatalf("%q: got %d %s", bad, resp.StatusCode, body)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("%q: connection not closed after the 400: %v", bad, err)
		}
	}
}

// TestUpgradeAfterOtherRequests: an upgrade on a keep-alive connection that
// first carried an ordinary request is served by net/http's path, and a
// plain GET of the WebSocket path gets a 400.
func TestUpgradeAfterOtherRequests(t *testing.T) {
	ts := start(t, nil)
	c, br := rawSend(t, ts, nil)
	for _, want := range []int{http.StatusOK, http.StatusBadRequest} {
		path := "/healthz"
		if want == http.StatusBadRequest {
			path = "/ws"
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, ts.addr)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if _, err := io.WriteString(c, upgradeRequest(ts, "token="+url.QueryEscape(token(t, "kept", "")), "")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade after other requests: %v, %v", resp, err)
	}
	if m := readJSON(t, br); m["type"] != "connected" || m["userId"] != "kept" {
		t.Fatalf("got %v", m)
	}
}

// TestPlainGetOfWebSocketPath: a first request on a new connection that is
// a GET of the WebSocket path without an upgrade goes to net/http and gets
// the JSON 400.
func TestPlainGetOfWebSocketPath(t *testing.T) {
	ts := start(t, nil)
	_, br := rawSend(t, ts, []byte(fmt.Sprintf("GET /ws?token=x HTTP/1.1\r\nHost: %s\r\n\r\n", ts.addr)))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"error":"websocket_required"`) {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
}

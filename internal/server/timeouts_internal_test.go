package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
)

// serveShort runs a server whose HTTP request deadlines, and its accept
// loop's for a request head, are d.
func serveShort(t *testing.T, d time.Duration) (addr, secret string) {
	t.Helper()
	checkGoroutines(t)
	cfg := config.Default()
	cfg.JWTSecret = "0123456789abcdef0123456789abcdef"
	cfg.APIKeys = []string{"0123456789abcdef0123"}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.httpRead, s.httpWrite, s.headRead = d, d, d
	return serve(t, s), cfg.JWTSecret
}

// serve runs s on a loopback port until the test ends and returns its
// address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// TestSlowRequestBodyIsCut: an API request whose body does not arrive
// within the read deadline does not hold its connection open.
func TestSlowRequestBodyIsCut(t *testing.T) {
	addr, _ := serveShort(t, 300*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: 0123456789abcdef0123\r\nContent-Length: 100\r\n\r\n{")); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, c) // whatever the answer, then the end
	if err != nil || time.Since(began) > 3*time.Second {
		t.Fatalf("connection with a stalled body ended after %v (%v), want within the read deadline", time.Since(began), err)
	}
}

// TestUpgradeThroughNetHTTPOutlivesRequestDeadlines: a WebSocket upgraded by
// net/http (after another request on its connection) keeps working past
// the HTTP request deadlines. net/http clears them when the connection is
// hijacked, and herald's session reads and writes past them anyway; this
// guards both.
func TestUpgradeThroughNetHTTPOutlivesRequestDeadlines(t *testing.T) {
	addr, secret := serveShort(t, 200*time.Millisecond)
	tok, err := auth.Mint([]byte(secret), auth.Identity{UserID: "u"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	upgrade := "GET /ws?token=" + url.QueryEscape(tok) + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := c.Write([]byte(upgrade)); err != nil {
		t.Fatal(err)
	}
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	rw := struct {
		io.Reader
		io.Writer
	}{br, c}
	if _, err := wsutil.ReadServerText(rw); err != nil { // connected
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // past both request deadlines
	for range 2 {
		if err := wsutil.WriteClientText(rw, []byte(`{"type":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		msg, err := wsutil.ReadServerText(rw)
		if err != nil {
			t.Fatalf("after the request deadlines: %v", err)
		}
		if string(msg[:13]) != `{"type":"pong` {
			t.Fatalf("got %s", msg)
		}
	}
	_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
}

// TestUnfinishedUpgradeHeadIsCut: a connection that starts an upgrade
// request and never finishes its head is closed at the accept loop's head
// deadline. It used to be handed to net/http, whose own header timeout
// (10 s here) held it as long again.
func TestUnfinishedUpgradeHeadIsCut(t *testing.T) {
	addr, _ := serveShort(t, 200*time.Millisecond)
	for _, head := range []string{"GET /ws HTTP/1.1\r\nHost: x\r\n", "GET /w"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c)
		c.Close()
		if err != nil || n != 0 || time.Since(began) > 3*time.Second {
			t.Fatalf("head %q: closed after %v with %d bytes (%v), want closed without an answer at the 200ms head deadline", head, time.Since(began), n, err)
		}
	}
}

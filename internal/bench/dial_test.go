package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// fakeUpgrader accepts connections on a loopback port; for each it reads the
// upgrade request and writes what respond returns (given the request and its
// Sec-WebSocket-Accept), then keeps the connection open until the test ends.
func fakeUpgrader(tb testing.TB, respond func(r *http.Request, accept string) string) (target, <-chan *http.Request) {
	tb.Helper()
	return fakeUpgraderAt(tb, "127.0.0.1:0", respond)
}

// fakeUpgraderAt is fakeUpgrader listening on addr.
func fakeUpgraderAt(tb testing.TB, addr string, respond func(r *http.Request, accept string) string) (target, <-chan *http.Request) {
	tb.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	reqs := make(chan *http.Request, 16)
	done := make(chan struct{})
	tb.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				select {
				case reqs <- r:
				default: // nobody is looking (benchmarks)
				}
				acc := acceptKey([]byte(r.Header.Get("Sec-WebSocket-Key")))
				_, _ = c.Write([]byte(respond(r, string(acc[:]))))
				// Hold the connection until the client closes it or the
				// test ends.
				go func() { <-done; c.Close() }()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	tg, err := parseTarget("ws://"+ln.Addr().String()+"/ws/path?x=1", "")
	if err != nil {
		tb.Fatal(err)
	}
	return tg, reqs
}

func switching(accept, extra string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n" + extra + "\r\n"
}

func dialTest(t *testing.T, tg target, compress bool) (*wsConn, error) {
	t.Helper()
	c, err := dialWS(t.Context(), tg, "tok.en", nil, 4096, 5*time.Second, 42, compress)
	if c != nil {
		t.Cleanup(func() { c.nc.Close() })
	}
	return c, err
}

func TestDialRequest(t *testing.T) {
	for _, compress := range []bool{false, true} {
		tg, reqs := fakeUpgrader(t, func(_ *http.Request, acc string) string { return switching(acc, "") })
		if _, err := dialTest(t, tg, compress); err != nil {
			t.Fatal(err)
		}
		r := <-reqs
		key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key"))
		switch {
		case r.Method != "GET" || r.RequestURI != "/ws/path" || r.Host != tg.hostPort:
			t.Fatalf("request line %s %s, host %s", r.Method, r.RequestURI, r.Host)
		case r.Header.Get("Upgrade") != "websocket" || r.Header.Get("Connection") != "Upgrade" || r.Header.Get("Sec-WebSocket-Version") != "13":
			t.Fatalf("headers %v", r.Header)
		case err != nil || len(key) != 16:
			t.Fatalf("key %q", r.Header.Get("Sec-WebSocket-Key"))
		case r.Header.Get("Authorization") != "Bearer tok.en":
			t.Fatalf("authorization %q", r.Header.Get("Authorization"))
		}
		ext := r.Header.Get("Sec-WebSocket-Extensions")
		if compress != (ext != "") || (compress && ext != "permessage-deflate;server_no_context_takeover;client_no_context_takeover") {
			t.Fatalf("compress %v: extensions %q", compress, ext)
		}
	}
	// Keys differ between connections.
	tg, reqs := fakeUpgrader(t, func(_ *http.Request, acc string) string { return switching(acc, "") })
	c1, _ := dialWS(t.Context(), tg, "", nil, 4096, 5*time.Second, 1, false)
	c2, _ := dialWS(t.Context(), tg, "", nil, 4096, 5*time.Second, 2, false)
	if c1 == nil || c2 == nil {
		t.Fatal("dial failed")
	}
	c1.nc.Close()
	c2.nc.Close()
	r1, r2 := <-reqs, <-reqs
	if r1.Header.Get("Sec-WebSocket-Key") == r2.Header.Get("Sec-WebSocket-Key") || r1.Header.Get("Authorization") != "" {
		t.Fatal("same key twice, or an Authorization header without a token")
	}
}

// TestDialRefused: a non-101 answer is a dialError with the status and the
// start of the body, read without waiting for the connection to close.
func TestDialRefused(t *testing.T) {
	tg, _ := fakeUpgrader(t, func(*http.Request, string) string {
		return "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n invalid token\n"
	})
	start := time.Now()
	_, err := dialTest(t, tg, false)
	var de *dialError
	if !errors.As(err, &de) || de.status != 401 || de.body != "invalid token" {
		t.Fatalf("err %#v", err)
	}
	if classifyErr(err) != "http 401" || time.Since(start) > 2*time.Second {
		t.Fatalf("classified %q after %v", classifyErr(err), time.Since(start))
	}
	if !strings.Contains(err.Error(), "HTTP 401 invalid token") {
		t.Fatalf("message %q", err)
	}
}

func TestDialBadResponses(t *testing.T) {
	for name, c := range map[string]struct {
		resp     func(acc string) string
		compress bool
		want     func(error) bool
	}{
		"wrong accept": {resp: func(string) string { return switching("dGhlIHNhbXBsZSBub25jZQ==AAAA", "") },
			want: func(err error) bool { return errors.Is(err, errBadAccept) }},
		"no accept": {resp: func(string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		}, want: func(err error) bool { return errors.Is(err, errBadAccept) }},
		"no upgrade": {resp: func(acc string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + "\r\n\r\n"
		}, want: func(err error) bool { return strings.Contains(err.Error(), "Upgrade: websocket") }},
		"no connection": {resp: func(acc string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " + acc + "\r\n\r\n"
		}, want: func(err error) bool { return strings.Contains(err.Error(), "Connection: Upgrade") }},
		"garbage": {resp: func(string) string { return "SSH-2.0-OpenSSH\r\n\r\n" },
			want: func(err error) bool { return strings.Contains(err.Error(), "malformed") }},
		"extension not offered": {resp: func(acc string) string { return switching(acc, "Sec-WebSocket-Extensions: permessage-deflate\r\n") },
			want: func(err error) bool { return strings.Contains(err.Error(), "not offered") }},
		"context takeover": {compress: true, resp: func(acc string) string {
			return switching(acc, "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n")
		}, want: func(err error) bool {
			return errors.Is(err, errContextTakeover) && classifyErr(err) == "deflate context takeover"
		}},
		"closed early": {resp: func(string) string { return "HTTP/1.1 101 Switching Protocols\r\nUpgr" },
			want: func(err error) bool { return err != nil }},
	} {
		t.Run(name, func(t *testing.T) {
			tg, _ := fakeUpgrader(t, func(_ *http.Request, acc string) string { return c.resp(acc) })
			ctx := t.Context()
			c2, err := dialWS(ctx, tg, "x", nil, 4096, 300*time.Millisecond, 7, c.compress)
			if err == nil || c2 != nil || !c.want(err) {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func TestDialDeflate(t *testing.T) {
	for name, c := range map[string]struct {
		ext  string
		want bool
	}{
		"accepted":   {"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n", true},
		"lower case": {"sec-websocket-extensions: permessage-deflate;server_no_context_takeover\r\n", true},
		"declined":   {"", false},
		"other":      {"Sec-WebSocket-Extensions: x-webkit-other\r\n", false},
	} {
		t.Run(name, func(t *testing.T) {
			tg, _ := fakeUpgrader(t, func(_ *http.Request, acc string) string { return switching(acc, c.ext) })
			wc, err := dialTest(t, tg, true)
			if err != nil || wc.deflate != c.want {
				t.Fatalf("deflate %v, err %v", wc != nil && wc.deflate, err)
			}
		})
	}
}

// TestDialKeepsBytesAfterResponse: frames that arrive with the response (in
// the same segment) are read by readFrame; header names and values are
// matched without regard to case.
func TestDialKeepsBytesAfterResponse(t *testing.T) {
	connected := serverFrame(ws.OpText, []byte(`{"type":"connected","client_id":"c1"}`))
	msg := messageFrame(7, 100)
	tg, _ := fakeUpgrader(t, func(_ *http.Request, acc string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, Upgrade\r\nsec-websocket-accept: " + acc + "\r\nServer: x\r\n\r\n" + string(connected) + string(msg)
	})
	c, err := dialTest(t, tg, false)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	op, p, err := c.readFrame()
	if err != nil || op != ws.OpText || string(frameType(p)) != "connected" {
		t.Fatalf("%v %q %v", op, p, err)
	}
	if _, p, err = c.readFrame(); err != nil || !bytes.Contains(p, []byte(`"seq":7`)) {
		t.Fatalf("%q %v", p, err)
	}
}

// TestDialCancel: cancelling the context interrupts a handshake the server
// never answers.
func TestDialCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			time.Sleep(3 * time.Second)
			c.Close()
		}
	}()
	tg, _ := parseTarget("ws://"+ln.Addr().String()+"/ws", "")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = dialWS(ctx, tg, "", nil, 4096, 10*time.Second, 1, false)
	if err == nil || time.Since(start) > 2*time.Second || classifyErr(err) != "timeout" {
		t.Fatalf("err %v (%s) after %v", err, classifyErr(err), time.Since(start))
	}
}

func TestParseStatusLine(t *testing.T) {
	for line, want := range map[string]int{
		"HTTP/1.1 101 Switching Protocols\r\n": 101,
		"HTTP/1.0 401\r\n":                     401,
		"HTTP/1.1 503 \r\n":                    503,
		"HTTP/1.1 1010 x\r\n":                  0,
		"HTTP/2 200 OK\r\n":                    0,
		"HTTP/1.1 2x0 OK\r\n":                  0,
		"":                                     0,
	} {
		got, ok := parseStatusLine([]byte(line))
		if got != want || ok != (want != 0) {
			t.Errorf("%q: %d %v", line, got, ok)
		}
	}
}

func TestAcceptKey(t *testing.T) {
	// RFC 6455 §1.3.
	if got := acceptKey([]byte("dGhlIHNhbXBsZSBub25jZQ==")); string(got[:]) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("%s", got)
	}
}

// BenchmarkDialWS is one upgrade against a minimal local responder: the
// generator's side of a connect, without the server's work.
func BenchmarkDialWS(b *testing.B) {
	tg, _ := fakeUpgrader(b, func(_ *http.Request, accept string) string { return switching(accept, "") })
	b.ReportAllocs()
	for b.Loop() {
		c, err := dialWS(b.Context(), tg, "token", nil, 4096, 5*time.Second, 1, false)
		if err != nil {
			b.Fatal(err)
		}
		c.nc.Close()
	}
}

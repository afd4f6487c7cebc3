//go:build linux && !386

package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// rawFleet is a fleet of n connections to tg on the epoll dial path.
func rawFleet(t *testing.T, tg target, n int, timeout time.Duration) *localFleet {
	t.Helper()
	f, err := newLocalFleet(fleetSpec{
		Scenario: "connect", WSURL: tg.wsURL, Secret: "s", TokenTTL: time.Hour, Count: n, Concurrency: n,
		ReadBuffer: 4096, Channel: "bench", ConnectTimeout: timeout, Reader: "epoll", SourceIPs: sourceIPs(tg),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !f.epoll {
		t.Fatal("not on the epoll path")
	}
	return f
}

// connectAll runs f's connect phase and then finishes it, returning the
// result.
func connectAll(t *testing.T, f *localFleet) *fleetResult {
	t.Helper()
	_ = f.connect(t.Context())
	res, err := f.finish(finishMsg{Published: []uint64{0}, Failed: []uint64{0}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestRawDialOneWrite: the whole setup arriving in one write — 101,
// connected, subscribed and a first message — is read in order, and the
// message counts as a delivery; over IPv4 (from 127.0.0.1–8) and ::1.
func TestRawDialOneWrite(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) { rawDialOneWrite(t, addr) })
	}
}

func rawDialOneWrite(t *testing.T, addr string) {
	tg, reqs := fakeUpgraderAt(t, addr, func(_ *http.Request, accept string) string {
		return switching(accept, "") +
			string(serverFrame(ws.OpText, []byte(`{"type":"connected","clientId":"c"}`))) +
			string(serverFrame(ws.OpText, []byte(`{"type":"subscribed","channel":"bench"}`))) +
			string(messageFrame(0, 100))
	})
	f := rawFleet(t, tg, 3, 5*time.Second)
	_ = f.connect(t.Context())
	if f.connected.Load() != 3 || len(f.errs) != 0 {
		t.Fatalf("connected %d, errors %v", f.connected.Load(), f.errs)
	}
	deadline := time.Now().Add(2 * time.Second)
	for f.progress().Delivered < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	res, err := f.finish(finishMsg{Published: []uint64{1}, Failed: []uint64{0}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 3 || res.Lost != 0 || len(res.Dropped) != 0 {
		t.Fatalf("delivered %d lost %d dropped %v", res.Delivered, res.Lost, res.Dropped)
	}
	r := <-reqs
	if r.Header.Get("Authorization") == "" || r.Header.Get("Sec-WebSocket-Key") == "" {
		t.Fatalf("request headers %v", r.Header)
	}
}

// TestRawDialFailures: each way a setup can fail is counted under its
// reason, and no socket is left open.
func TestRawDialFailures(t *testing.T) {
	connected := string(serverFrame(ws.OpText, []byte(`{"type":"connected"}`)))
	for _, tc := range []struct {
		name, want string
		respond    func(accept string) string
	}{
		// Handshake faults are "other" in the report, as on the dial path.
		{"bad accept", "other", func(string) string {
			return switching("bm90IHRoZSByaWdodCBhY2NlcHQ=", "")
		}},
		{"refused upgrade", "http 403", func(string) string {
			return "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden"
		}},
		{"first frame not connected", "first frame is not connected", func(a string) string {
			return switching(a, "") + string(serverFrame(ws.OpText, []byte(`{"type":"hello"}`)))
		}},
		{"closed while subscribing", "closed by server while subscribing: 4000", func(a string) string {
			return switching(a, "") + connected + string(serverFrame(ws.OpClose, ws.NewCloseFrameBody(4000, "bye")))
		}},
		{"subscribe refused", "subscribe refused: forbidden", func(a string) string {
			return switching(a, "") + connected + string(serverFrame(ws.OpText, []byte(`{"type":"error","code":"forbidden"}`)))
		}},
		{"extensions not offered", "other", func(a string) string {
			return switching(a, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, _ := fakeUpgrader(t, func(_ *http.Request, accept string) string { return tc.respond(accept) })
			res := connectAll(t, rawFleet(t, tg, 2, 5*time.Second))
			if res.Connected != 0 || len(res.ConnectErrors) != 1 {
				t.Fatalf("connected %d, errors %v", res.Connected, res.ConnectErrors)
			}
			for reason, n := range res.ConnectErrors {
				if n != 2 || !strings.Contains(reason, tc.want) {
					t.Fatalf("errors %v, want 2 × %q", res.ConnectErrors, tc.want)
				}
			}
		})
	}
}

// TestRawDialRefusedAndTimeout: a closed port fails at once as "connection
// refused"; a server that accepts and never answers fails as "timeout"
// after --connect-timeout, and finish closes those sockets.
func TestRawDialRefusedAndTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tg, err := parseTarget("ws://"+addr+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	if res := connectAll(t, rawFleet(t, tg, 2, 5*time.Second)); res.ConnectErrors["connection refused"] != 2 {
		t.Fatalf("closed port: %v", res.ConnectErrors)
	}

	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	tg, err = parseTarget("ws://"+ln.Addr().String()+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := connectAll(t, rawFleet(t, tg, 2, 300*time.Millisecond))
	if res.ConnectErrors["timeout"] != 2 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("silent server: %v after %v", res.ConnectErrors, time.Since(start))
	}
	for range 2 {
		c := <-accepted
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("the abandoned socket was not closed: %v", err)
		}
		c.Close()
	}
}

// TestRawDialCancel: cancelling the run while setups are pending returns
// promptly and counts them as canceled.
func TestRawDialCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	tg, err := parseTarget("ws://"+ln.Addr().String()+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	f := rawFleet(t, tg, 4, time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = f.connect(ctx)
	if d := time.Since(start); d > 20*time.Second { // not the minute's dial timeout
		t.Fatalf("connect returned after %v", d)
	}
	res, err := f.finish(finishMsg{Published: []uint64{0}, Failed: []uint64{0}})
	if err != nil {
		t.Fatal(err)
	}
	if res.ConnectErrors["canceled"] != 4 && res.ConnectErrors["timeout"] != 4 {
		t.Fatalf("errors %v", res.ConnectErrors)
	}
}

// TestRawConnect: the epoll reader's raw connect reaches an IPv4 target
// from the source address it is given, and an IPv6 one (when the machine
// has ::1), with the port in network byte order.
func TestRawConnect(t *testing.T) {
	for _, c := range []struct{ listen, local, wantFrom string }{
		{"127.0.0.1:0", "127.0.0.5", "127.0.0.5"},
		{"127.0.0.1:0", "", "127.0.0.1"},
		{"[::1]:0", "", "::1"},
	} {
		ln, err := net.Listen("tcp", c.listen)
		if err != nil {
			if c.wantFrom == "::1" {
				t.Logf("no IPv6 loopback here (%v); that case is not run", err)
				continue
			}
			t.Fatal(err)
		}
		fd, err := rawConnect(ln.Addr().String(), net.ParseIP(c.local))
		if err != nil {
			ln.Close()
			t.Fatalf("rawConnect(%s): %v", ln.Addr(), err)
		}
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			syscall.Close(fd)
			t.Fatalf("accept from rawConnect(%s): %v", c.listen, err)
		}
		if got := conn.RemoteAddr().(*net.TCPAddr).IP.String(); got != c.wantFrom {
			t.Errorf("%s: connection from %s, want %s", c.listen, got, c.wantFrom)
		}
		// The connection works both ways once established.
		if _, err := conn.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2)
		deadline := time.Now().Add(5 * time.Second)
		for {
			n, err := rawRead(fd, buf)
			if n == 2 && string(buf) == "ok" {
				break
			}
			if (err != syscall.EAGAIN && err != nil) || time.Now().After(deadline) {
				t.Fatalf("%s: read %d %q %v", c.listen, n, buf[:n], err)
			}
			time.Sleep(time.Millisecond)
		}
		conn.Close()
		syscall.Close(fd)
	}
}

package server_test

import (
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

// TestShutdownClosesClientsBeforeSlowRequests: a shutdown closes the
// WebSocket clients with 1001 at once, even while an HTTP request is still
// sending its body; that request gets what is left of the budget.
func TestShutdownClosesClientsBeforeSlowRequests(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.ShutdownTimeout = 20 * time.Second })
	a := ts.dial("alice", "")
	slow, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testAPIKey + "\r\nContent-Length: 100\r\n\r\n{")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the request is in its handler, reading the body
	began := time.Now()
	go func() { _ = ts.stop() }()
	if code := a.expectClose(15 * time.Second); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	// Waiting for the slow request would take the whole 20 s budget: 10 s
	// is a failure bound for a loaded machine, not a measure.
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("the client's 1001 came %v after the shutdown began: it waited for the slow request", d)
	}
}

// TestHealthzWhileDraining: from the start of a shutdown until the WebSocket
// clients are gone, /healthz answers 503 draining and upgrades are refused
// with 503, on the same port.
func TestHealthzWhileDraining(t *testing.T) {
	ts := start(t, nil)
	// A client that never answers the close keeps the drain going for the
	// hub's close grace (2 s).
	mute, _ := rawUpgrade(t, ts, "token="+url.QueryEscape(token(t, "mute", "")), nil)
	defer mute.Close()
	done := make(chan error, 1)
	go func() { done <- ts.stop() }()
	deadline := time.Now().Add(time.Second)
	for {
		status, body := ts.api("GET", "/healthz", "", "")
		if status == http.StatusServiceUnavailable && body["status"] == "draining" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz during the drain: %d %v, want 503 draining", status, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	status, body := ts.dialStatus(ts.wsURL("token="+url.QueryEscape(token(t, "late", ""))), nil)
	if status != http.StatusServiceUnavailable || body["error"] != "shutting_down" {
		t.Fatalf("upgrade during the drain: %d %v, want 503 shutting_down", status, body)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}

// TestServeWaitsForConnectionGoroutines: Serve returns only once every
// goroutine started for a connection has ended, and then counts none —
// including the close grace of a client that never answers its close (a
// delayed call pending for 2 s) and the reader and close of one that does.
func TestServeWaitsForConnectionGoroutines(t *testing.T) {
	ts := start(t, nil)
	mute, _ := rawUpgrade(t, ts, "token="+url.QueryEscape(token(t, "mute", "")), nil)
	defer mute.Close()
	polite := ts.dial("polite", "")
	release := make(chan struct{})
	ts.srv.GoConn(func() { <-release }) // a connection goroutine that has not ended yet
	done := make(chan error, 1)
	go func() { done <- ts.stop() }()
	if code := polite.expectClose(5 * time.Second); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) while a connection goroutine still ran", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	if n := ts.srv.ConnGoroutines(); n != 0 {
		t.Fatalf("%d connection goroutines still counted after Serve returned", n)
	}
}

// TestShutdownCutsUnfinishedHeads: a connection still sending its request
// head when the server shuts down is cut, so Serve's wait for connection
// goroutines does not sit out the head timeout (longer than the shutdown
// budget here) and ends with none still counted.
func TestShutdownCutsUnfinishedHeads(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.ShutdownTimeout = 2 * time.Second })
	slow, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // accepted, its head being read
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	if n := ts.srv.ConnGoroutines(); n != 0 {
		t.Fatalf("%d connection goroutines still counted after Serve returned", n)
	}
}

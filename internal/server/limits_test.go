package server_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

// tryDial attempts an upgrade for user and reports whether it succeeded,
// closing the connection at the end of the test.
func (ts *testServer) tryDial(user string) bool {
	ts.t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(ts.wsURL("token="+url.QueryEscape(token(ts.t, user, ""))), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return false
	}
	ts.t.Cleanup(func() { conn.Close() })
	return true
}

// TestMaxConnections: past --max-connections an upgrade gets 503
// server_full — on the fast path and through net/http alike — which is
// counted, while the API and health checks still answer; a connection that
// closes frees its place.
func TestMaxConnections(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxConnections = 2 })
	alice := ts.dial("alice", "")
	alice.subscribe("room")
	ts.dial("bob", "")
	status, body := ts.dialStatus(ts.wsURL("token="+url.QueryEscape(token(t, "carol", ""))+"&subscribe=room"), nil)
	if status != http.StatusServiceUnavailable || body["error"] != "server_full" {
		t.Fatalf("third connection: %d %v, want 503 server_full", status, body)
	}
	// An upgrade that reaches net/http (after a request on the same
	// connection) is refused the same way.
	c, br := rawSend(t, ts, []byte("GET /healthz HTTP/1.1\r\nHost: "+ts.addr+"\r\n\r\n"))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz while full: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	if _, err := c.Write([]byte(upgradeRequest(ts, "token="+url.QueryEscape(token(t, "dave", "")), ""))); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade through net/http while full: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	if code, _ := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"room","data":1}`); code != http.StatusOK {
		t.Fatalf("API while full: %d", code)
	}
	if m := alice.expect("message"); m["channel"] != "room" {
		t.Fatalf("got %v", m)
	}
	metrics := ts.metricsText()
	if v := metricLine(t, metrics, `herald_connections_refused_total{reason="server_full"}`); v != 2 {
		t.Fatalf("server_full refusals %v, want 2", v)
	}
	if v := metricLine(t, metrics, "herald_connections"); v != 2 {
		t.Fatalf("herald_connections %v, want 2", v)
	}
	if v := metricLine(t, metrics, "herald_subscriptions"); v != 1 { // carol's subscribe=room was not made
		t.Fatalf("herald_subscriptions %v, want 1", v)
	}
	_ = alice.conn.Close()
	eventually(t, 5*time.Second, "a place freed by a closed connection", func() bool { return ts.tryDial("erin") })
}

// TestMaxUserConnections: past --max-user-connections one user's next
// upgrade gets 429 user_connection_limit; other users are not affected,
// and the user may connect again once one of theirs has closed.
func TestMaxUserConnections(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxUserConnections = 2 })
	first := ts.dial("alice", "")
	ts.dial("alice", "")
	status, body := ts.dialStatus(ts.wsURL("token="+url.QueryEscape(token(t, "alice", ""))), nil)
	if status != http.StatusTooManyRequests || body["error"] != "user_connection_limit" {
		t.Fatalf("alice's third connection: %d %v, want 429 user_connection_limit", status, body)
	}
	ts.dial("bob", "")
	ts.dial("bob", "")
	if v := metricLine(t, ts.metricsText(), `herald_connections_refused_total{reason="user_limit"}`); v != 1 {
		t.Fatalf("user_limit refusals %v, want 1", v)
	}
	if v := metricLine(t, ts.metricsText(), `herald_connections_refused_total{reason="server_full"}`); v != 0 {
		t.Fatalf("server_full refusals %v, want 0", v)
	}
	_ = first.conn.Close()
	eventually(t, 5*time.Second, "alice connecting again", func() bool { return ts.tryDial("alice") })
}

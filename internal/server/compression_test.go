package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

var bytesOutRe = regexp.MustCompile(`(?m)^herald_bytes_out_total ([0-9.e+]+)$`)

func (ts *testServer) bytesOut() float64 {
	ts.t.Helper()
	m := bytesOutRe.FindStringSubmatch(ts.metricsText())
	if m == nil {
		ts.t.Fatal("no herald_bytes_out_total")
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func (ts *testServer) dialCompressed(user string) *wsClient {
	ts.t.Helper()
	d := websocket.Dialer{EnableCompression: true}
	conn, resp, err := d.Dial(ts.wsURL("token="+url.QueryEscape(token(ts.t, user, ""))), nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	if !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		ts.t.Fatalf("compression not negotiated: %q", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	conn.EnableWriteCompression(true)
	ts.t.Cleanup(func() { conn.Close() })
	c := &wsClient{t: ts.t, conn: conn}
	c.Connected = c.expect("connected")
	return c
}

// TestCompression: large publications reach a client that negotiated
// permessage-deflate compressed (fewer bytes on the wire) and a client that
// did not in plain form; small ones are never compressed; compressed client
// frames are understood.
func TestCompression(t *testing.T) {
	ts := start(t, nil)
	z := ts.dialCompressed("zip")
	z.subscribe("feed")
	big := strings.Repeat("metrics ", 1000) // 8000 bytes, very compressible
	const n = 10
	before := ts.bytesOut()
	for i := 0; i < n; i++ {
		ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"feed","data":{"i":%d,"s":%q}}`, i, big))
	}
	for i := 0; i < n; i++ {
		m := z.expect("message")
		if d := m["data"].(map[string]any); d["i"] != float64(i) || d["s"] != big {
			t.Fatalf("message %d corrupted", i)
		}
	}
	z.sync()
	if sent := ts.bytesOut() - before; sent > float64(n*len(big)/4) {
		t.Fatalf("%v bytes on the wire for %d messages of %d bytes: not compressed", sent, n, len(big))
	}

	plain := ts.dial("plain", "")
	plain.subscribe("feed")
	before = ts.bytesOut()
	ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"feed","data":%q}`, big))
	if m := plain.expect("message"); m["data"] != big {
		t.Fatal("plain client got corrupted data")
	}
	if m := z.expect("message"); m["data"] != big {
		t.Fatal("compressing client got corrupted data")
	}
	plain.sync()
	z.sync()
	if sent := ts.bytesOut() - before; sent < float64(len(big)) {
		t.Fatalf("only %v bytes sent: the plain client cannot have had plain text", sent)
	}

	// The client may compress too.
	other := ts.dial("other", "")
	other.subscribe("feed")
	z.send(map[string]any{"type": "message", "channel": "feed", "data": big})
	if m := other.expect("message"); m["data"] != big || m["from"] != "zip" {
		t.Fatal("compressed client frame misread")
	}
}

func TestCompressionOff(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.Compression = false })
	d := websocket.Dialer{EnableCompression: true}
	conn, resp, err := d.Dial(ts.wsURL("token="+url.QueryEscape(token(t, "a", ""))), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("compression negotiated while off: %q", ext)
	}
}

// TestUpgradeStateStartsClean: the fast path keeps each handshake's state in
// a pool; a refusal, a negotiated compression or a user must not carry over
// to the next connection that reuses it.
func TestUpgradeStateStartsClean(t *testing.T) {
	ts := start(t, nil)
	for i := range 30 {
		if status, _ := ts.dialStatus(ts.wsURL("token=not-a-jwt"), nil); status != http.StatusUnauthorized {
			t.Fatalf("round %d: a bad token got HTTP %d, want 401", i, status)
		}
		z := ts.dialCompressed(fmt.Sprintf("z%d", i))
		if z.Connected["userId"] != fmt.Sprintf("z%d", i) {
			t.Fatalf("round %d: compressed client connected as %v", i, z.Connected["userId"])
		}
		user := fmt.Sprintf("p%d", i)
		conn, resp, err := websocket.DefaultDialer.Dial(ts.wsURL("token="+url.QueryEscape(token(t, user, ""))), nil)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
			t.Fatalf("round %d: compression negotiated for a client that offered none: %q", i, ext)
		}
		p := &wsClient{t: t, conn: conn}
		if m := p.expect("connected"); m["userId"] != user {
			t.Fatalf("round %d: plain client connected as %v, want %s", i, m["userId"], user)
		}
		conn.Close()
		z.conn.Close()
	}
}

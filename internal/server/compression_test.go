package server_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

func (ts *testServer) bytesOut() float64 {
	ts.t.Helper()
	return metricLine(ts.t, ts.metricsText(), "herald_bytes_out_total")
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

// TestMalformedDeflateOfferDeclined: a permessage-deflate offer with an
// unknown parameter or a bad value is declined (RFC 7692 §5), on both
// upgrade paths, and the connection is upgraded without compression — or
// with a later, well-formed offer. It used to fail the handshake with a 500.
func TestMalformedDeflateOfferDeclined(t *testing.T) {
	ts := start(t, nil)
	for _, c := range []struct {
		offer  string
		accept bool
	}{
		{"permessage-deflate; clientmax_window_bits", false},
		{"permessage-deflate; server_max_window_bits=99", false},
		{"permessage-deflate; client_no_context_takeover; client_no_context_takeover", false},
		{"permessage-deflate; foo=1, permessage-deflate; client_max_window_bits", true},
	} {
		for _, path := range []string{"fast", "net/http"} {
			c0, br := rawSend(t, ts, nil)
			if path == "net/http" { // a first request sends the upgrade to net/http's path
				fmt.Fprintf(c0, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", ts.addr)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
			}
			user := "u" + strconv.Itoa(len(c.offer))
			fmt.Fprint(c0, upgradeRequest(ts, "token="+url.QueryEscape(token(t, user, "")), "Sec-WebSocket-Extensions: "+c.offer+"\r\n"))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("%s path, offer %q: HTTP %d %s", path, c.offer, resp.StatusCode, body)
			}
			if got := resp.Header.Get("Sec-WebSocket-Extensions") != ""; got != c.accept {
				t.Fatalf("%s path, offer %q: extension %q, want accepted %v", path, c.offer, resp.Header.Get("Sec-WebSocket-Extensions"), c.accept)
			}
			if m := readJSON(t, br); m["type"] != "connected" || m["userId"] != user {
				t.Fatalf("%s path, offer %q: got %v", path, c.offer, m)
			}
			c0.Close()
		}
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

package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// rawSend dials the server and sends data in one write; the reader has a
// 5 s deadline.
func rawSend(t *testing.T, ts *testServer, data []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return c, bufio.NewReader(c)
}

// upgradeRequest is a minimal WebSocket upgrade request of /ws?query.
func upgradeRequest(ts *testServer, query, extraHeaders string) string {
	return fmt.Sprintf("GET /ws?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n", query, ts.addr, extraHeaders)
}

// rawUpgrade writes an upgrade request and, in the same TCP write, extra
// bytes (frames the client sends before seeing the 101).
func rawUpgrade(t *testing.T, ts *testServer, query string, extra []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br := rawSend(t, ts, append([]byte(upgradeRequest(ts, query, "")), extra...))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return c, br
}

// rawUpgradeDeflate upgrades a raw connection for user, offering
// permessage-deflate when deflate is set; it checks the 101 and that deflate
// was negotiated exactly when offered, and reads the connected frame.
func rawUpgradeDeflate(t *testing.T, ts *testServer, user string, deflate bool) (net.Conn, *bufio.Reader) {
	t.Helper()
	ext := ""
	if deflate {
		ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
	}
	c, br := rawSend(t, ts, []byte(upgradeRequest(ts, "token="+url.QueryEscape(token(t, user, "")), ext)))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Extensions") != ""; got != deflate {
		t.Fatalf("deflate negotiated %v, want %v", got, deflate)
	}
	readJSON(t, br) // connected
	return c, br
}

func maskedText(t *testing.T, payload string) []byte {
	var b bytes.Buffer
	if err := ws.WriteFrame(&b, ws.MaskFrame(ws.NewTextFrame([]byte(payload)))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readJSON(t *testing.T, br *bufio.Reader) map[string]any {
	t.Helper()
	f, err := ws.ReadFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.OpCode != ws.OpText || !f.Header.Fin {
		t.Fatalf("want one final text frame, got %+v", f.Header)
	}
	p := f.Payload
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestFramesPipelinedWithHandshake: frames sent in the same packet as the
// upgrade request are not lost.
func TestFramesPipelinedWithHandshake(t *testing.T) {
	ts := start(t, nil)
	extra := append(maskedText(t, `{"type":"ping","id":1}`), maskedText(t, `{"type":"ping","id":2}`)...)
	_, br := rawUpgrade(t, ts, "token="+url.QueryEscape(token(t, "pipe", "")), extra)
	if m := readJSON(t, br); m["type"] != "connected" {
		t.Fatalf("got %v", m)
	}
	for _, id := range []float64{1, 2} {
		if m := readJSON(t, br); m["type"] != "pong" || m["id"] != id {
			t.Fatalf("got %v, want pong %v", m, id)
		}
	}
}

// TestFirstCommandRightAfterConnected: clients that send a command the
// moment they have read connected, then another, get both answered. The
// first command can reach the server before the connection is watched for
// readiness; its handler may then run before the session has stored the
// connection's registration, and it once returned without re-arming it, so
// the second command was never read (about 1 connection in 150).
func TestFirstCommandRightAfterConnected(t *testing.T) {
	ts := start(t, nil)
	for i := range 300 {
		c := ts.dial(fmt.Sprint("user-", i), "")
		c.sendRaw([]byte(`{"type":"subscribe","channel":"chat"}`))
		c.expect("subscribed")
		c.sendRaw([]byte(`{"type":"ping"}`))
		c.expect("pong")
		_ = c.conn.Close()
	}
}

// TestFragmentedMessageAndInterleavedPing: a message split over several
// frames, with a ping between them, is reassembled; the ping is answered.
func TestFragmentedMessageAndInterleavedPing(t *testing.T) {
	ts := start(t, nil)
	c, br := rawUpgrade(t, ts, "token="+url.QueryEscape(token(t, "frag", "")), nil)
	readJSON(t, br) // connected
	var b bytes.Buffer
	parts := []string{`{"type":"pi`, `ng","id`, `":"frag"}`}
	for i, p := range parts {
		op := ws.OpContinuation
		if i == 0 {
			op = ws.OpText
		}
		_ = ws.WriteFrame(&b, ws.MaskFrame(ws.NewFrame(op, i == len(parts)-1, []byte(p))))
		if i == 0 {
			_ = ws.WriteFrame(&b, ws.MaskFrame(ws.NewPingFrame([]byte("hb"))))
		}
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	h, err := ws.ReadHeader(br)
	if err != nil || h.OpCode != ws.OpPong {
		t.Fatalf("want pong frame first, got %+v %v", h, err)
	}
	pl := make([]byte, h.Length)
	_, _ = br.Read(pl)
	if string(pl) != "hb" {
		t.Fatalf("pong payload %q", pl)
	}
	if m := readJSON(t, br); m["type"] != "pong" || m["id"] != "frag" {
		t.Fatalf("got %v", m)
	}
}

// TestProtocolViolationCloses1002: an unmasked client frame is a protocol
// error.
func TestProtocolViolationCloses1002(t *testing.T) {
	ts := start(t, nil)
	frame := func(f ws.Frame, rsv byte) []byte {
		f.Header.Rsv = rsv
		var b bytes.Buffer
		_ = ws.WriteFrame(&b, f)
		return b.Bytes()
	}
	masked := func(f ws.Frame) ws.Frame { return ws.MaskFrame(f) }
	ping := []byte(`{"type":"ping"}`)
	first := masked(ws.NewFrame(ws.OpText, false, ping[:5]))
	rest := masked(ws.NewFrame(ws.OpContinuation, true, ping[5:]))
	for _, tc := range []struct {
		name    string
		deflate bool
		send    []byte
		reason  string // when set, the close reason
	}{
		{"unmasked", false, frame(ws.NewTextFrame(ping), 0), ""},
		{"64-bit length with its top bit set", false, []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, "invalid frame length"},
		{"RSV2 with deflate", true, frame(masked(ws.NewTextFrame(ping)), ws.Rsv(false, true, false)), ""},
		{"RSV3 with deflate", true, frame(masked(ws.NewTextFrame(ping)), ws.Rsv(false, false, true)), ""},
		{"RSV2 on a continuation with deflate", true, append(frame(first, 0), frame(rest, ws.Rsv(false, true, false))...), ""},
		{"RSV2 on a ping inside a message with deflate", true,
			slices.Concat(frame(first, 0), frame(masked(ws.NewPingFrame(nil)), ws.Rsv(false, true, false)), frame(rest, 0)), ""},
		{"bad deflate data", true, frame(masked(ws.NewTextFrame([]byte{0xff, 0xff, 0xff, 0xff})), ws.Rsv(true, false, false)), "invalid permessage-deflate data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawUpgradeDeflate(t, ts, "bad", tc.deflate)
			_, _ = c.Write(tc.send)
			f, err := ws.ReadFrame(br)
			if err != nil || f.Header.OpCode != ws.OpClose {
				t.Fatalf("want close frame, got %+v %v", f.Header, err)
			}
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if code != ws.StatusProtocolError || tc.reason != "" && reason != tc.reason {
				t.Fatalf("close %d %q, want 1002 %q", code, reason, tc.reason)
			}
		})
	}
}

// TestHandshakeAndConnectedInOneWrite: the 101 response and the connected
// frame leave in one write, so one read on loopback returns both.
func TestHandshakeAndConnectedInOneWrite(t *testing.T) {
	ts := start(t, nil)
	c, _ := rawSend(t, ts, []byte(upgradeRequest(ts, "token="+url.QueryEscape(token(t, "greet", "")), "")))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	head, rest, ok := bytes.Cut(buf[:n], []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		t.Fatalf("first read is not a complete 101 response: %q", buf[:n])
	}
	if m := readJSON(t, bufio.NewReader(bytes.NewReader(rest))); m["type"] != "connected" || m["userId"] != "greet" {
		t.Fatalf("first read did not carry the connected frame: %v", m)
	}
}

// TestBadUpgradeGetsHTTPError: a handshake the upgrader refuses (here an
// unsupported WebSocket version) is answered with its HTTP error, not a
// silent close.
func TestBadUpgradeGetsHTTPError(t *testing.T) {
	ts := start(t, nil)
	req := strings.Replace(upgradeRequest(ts, "token="+url.QueryEscape(token(t, "old", "")), ""), "Version: 13", "Version: 8", 1)
	_, br := rawSend(t, ts, []byte(req))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("status %d, want 426", resp.StatusCode)
	}
}

// TestControlFramesBetweenMessages: a control frame sent on its own is read
// and checked without a message reader (the path an idle client's pongs
// take): a masked ping of any allowed size is answered with its payload, and
// an unmasked, fragmented, oversize or compressed one closes with 1002 — also
// on a connection that negotiated permessage-deflate.
func TestControlFramesBetweenMessages(t *testing.T) {
	ts := start(t, nil)
	long := strings.Repeat("p", 125)
	ping := func(p string) ws.Frame { return ws.NewPingFrame([]byte(p)) }
	for _, tc := range []struct {
		name    string
		deflate bool
		frame   ws.Frame
		mask    bool
		pong    string // the answer, or "" for a 1002 close
	}{
		{"masked ping", false, ping("hb"), true, "hb"},
		{"empty ping", false, ping(""), true, "\x00"},
		{"125-byte ping", false, ping(long), true, long},
		{"ping with deflate", true, ping("z"), true, "z"},
		{"unmasked ping", false, ping("hb"), false, ""},
		{"126-byte ping", false, ping(long + "x"), true, ""},
		{"fragmented ping", false, func() ws.Frame { f := ping("hb"); f.Header.Fin = false; return f }(), true, ""},
		{"compressed ping", true, func() ws.Frame { f := ping("hb"); f.Header.Rsv = ws.Rsv(true, false, false); return f }(), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawUpgradeDeflate(t, ts, "ctl", tc.deflate)
			f := tc.frame
			if tc.mask {
				f = ws.MaskFrame(f)
			}
			var b bytes.Buffer
			if err := ws.WriteFrame(&b, f); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(b.Bytes()); err != nil {
				t.Fatal(err)
			}
			got, err := ws.ReadFrame(br)
			if err != nil {
				t.Fatal(err)
			}
			if tc.pong == "" {
				code, reason := ws.ParseCloseFrameData(got.Payload)
				if got.Header.OpCode != ws.OpClose || code != ws.StatusProtocolError {
					t.Fatalf("got %v %q, want a 1002 close", got.Header.OpCode, got.Payload)
				}
				if tc.deflate && strings.Contains(reason, "no extension negotiated") {
					t.Fatalf("close reason %q on a connection that negotiated deflate", reason)
				}
				return
			}
			want := tc.pong
			if want == "\x00" {
				want = ""
			}
			if got.Header.OpCode != ws.OpPong || string(got.Payload) != want {
				t.Fatalf("got %v %q, want pong %q", got.Header.OpCode, got.Payload, want)
			}
			// The connection still works after it.
			if _, err := c.Write(maskedText(t, `{"type":"ping","id":"after"}`)); err != nil {
				t.Fatal(err)
			}
			if m := readJSON(t, br); m["type"] != "pong" || m["id"] != "after" {
				t.Fatalf("after the control frame: %v", m)
			}
		})
	}
}

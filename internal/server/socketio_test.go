package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

// TestSocketIOConformanceMode checks the conformance mode's wiring: the
// suites' timings at /engine.io/ and /socket.io/, the namespaces and the
// "auth" event, and refused requests counted by kind.
func TestSocketIOConformanceMode(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.ConformanceSocketIO = true })
	get := func(path string) (int, string) {
		t.Helper()
		res, err := http.Get(ts.httpURL(path))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	post := func(path, body string) int {
		t.Helper()
		res, err := http.Post(ts.httpURL(path), "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, p := range []string{"/engine.io/", "/socket.io/"} {
		code, body := get(p + "?EIO=4&transport=polling")
		if code != 200 || !strings.Contains(body, `"pingInterval":300,"pingTimeout":200,"maxPayload":1000000`) {
			t.Fatalf("%s handshake: %d %s", p, code, body)
		}
	}
	_, body := get("/socket.io/?EIO=4&transport=polling")
	sid := body[strings.Index(body, `"sid":"`)+7:]
	sid = sid[:strings.IndexByte(sid, '"')]
	q := "/socket.io/?EIO=4&transport=polling&sid=" + sid
	if code := post(q, `40/custom,{"token":"x"}`); code != 200 {
		t.Fatalf("connect: %d", code)
	}
	if _, got := get(q); !strings.HasPrefix(got, `40/custom,{"sid":"`) {
		t.Fatalf("connect answer %q", got)
	}
	if _, got := get(q); got != `42/custom,["auth",{"token":"x"}]` {
		t.Fatalf("auth event %q", got)
	}
	if code, _ := get("/socket.io/?EIO=3&transport=polling"); code != 400 {
		t.Fatalf("EIO=3: %d", code)
	}
	if !containsLine(ts.metricsText(), `herald_socketio_errors_total{kind="bad_request"} 1`) {
		t.Error("refused request not counted")
	}
}

// TestSocketIOOffByDefault: without the conformance mode nothing answers
// at /engine.io/.
func TestSocketIOOffByDefault(t *testing.T) {
	ts := start(t, nil)
	res, err := http.Get(ts.httpURL("/engine.io/?EIO=4&transport=polling"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("status %d", res.StatusCode)
	}
}

// TestSocketIOBadInput: each bad Socket.IO or Engine.IO input gets its
// defined answer and is counted by kind, and a session it ends leaves no
// hub client behind.
func TestSocketIOBadInput(t *testing.T) {
	ts := start(t, nil)
	unknown := &sioPolling{t: t, ts: ts, q: "&sid=nope"}
	if code, body := unknown.do("GET", ""); code != 400 || !strings.Contains(body, `"code":1`) {
		t.Fatalf("unknown sid: %d %s", code, body)
	}
	// No token: CONNECT_ERROR with the reason, the session stays.
	s := handshakeSIO(t, ts)
	s.do("POST", "40")
	if _, body := s.do("GET", ""); body != `44{"message":"unauthorized: missing","data":{"code":"unauthorized"}}` {
		t.Fatalf("refusal %q", body)
	}
	// Connected, then a malformed packet: the session and its hub client end.
	s = handshakeSIO(t, ts)
	s.do("POST", `40{"token":"`+token(t, "u1", "42")+`"}`)
	if _, body := s.do("GET", ""); !strings.HasPrefix(body, `40{"sid":"`) || !strings.Contains(body, `"pid":"`) {
		t.Fatalf("connect answer %q", body)
	}
	if n := ts.srv.Hub().NumClients(); n != 1 {
		t.Fatalf("%d hub clients, want 1", n)
	}
	if code, _ := s.do("POST", `42{}`); code != 200 {
		t.Fatalf("malformed packet's post: %d", code)
	}
	if code, _ := s.do("GET", ""); code != 400 {
		t.Fatalf("poll after a malformed packet: %d", code)
	}
	eventually(t, 10*time.Second, "the hub client to go", func() bool { return ts.srv.Hub().NumClients() == 0 })
	// Oversized body: 413.
	s = handshakeSIO(t, ts)
	if code, _ := s.do("POST", "4"+strings.Repeat("x", 2<<20)); code != 413 {
		t.Fatalf("oversized body: %d", code)
	}
	m := ts.metricsText()
	for _, kind := range []string{"unknown_sid", "sio_refused", "sio_bad_packet", "payload_too_large"} {
		if !containsLine(m, `herald_socketio_errors_total{kind="`+kind+`"}`) {
			t.Errorf("%s not counted", kind)
		}
	}
}

// TestSocketIOLargeHistoryOverPolling: a history answer larger than the
// client queue reaches a polling socket whole (it waits in the hub's queue,
// exempt from the bound like on /ws, while polls take it), rather than
// closing the socket as a slow consumer.
func TestSocketIOLargeHistoryOverPolling(t *testing.T) {
	ts := start(t, nil)
	chunk := strings.Repeat("h", 200<<10)
	for i := 0; i < 10; i++ { // 2 MB of history, past the 1 MiB queue
		if code, _ := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":"`+chunk+`"}`); code != 200 {
			t.Fatalf("publish %d: %d", i, code)
		}
	}
	s := handshakeSIO(t, ts)
	s.do("POST", `40{"token":"`+token(t, "u1", "42")+`"}`)
	s.do("POST", `427["request:history",{"channel":"org:42"}]`)
	var got strings.Builder
	for !strings.Contains(got.String(), "437[") || !strings.HasSuffix(got.String(), "}]") {
		code, b := s.do("GET", "")
		if code != 200 {
			t.Fatalf("poll: %d after %d bytes", code, got.Len())
		}
		got.WriteString(b)
	}
	ack := got.String()[strings.Index(got.String(), "437["):]
	if !strings.HasPrefix(ack, `437[{"ok":true,"publications":[`) || strings.Count(ack, chunk) != 10 {
		t.Fatalf("history ack: %d bytes, %d publications: %.300s", len(ack), strings.Count(ack, chunk), ack)
	}
}

// sioWS is a raw Engine.IO-over-WebSocket client (gorilla) for the direct
// path's tests: each WebSocket message is one Engine.IO packet.
type sioWS struct {
	t    *testing.T
	conn *websocket.Conn
}

func (ts *testServer) dialSIO() *sioWS {
	ts.t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+ts.addr+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		ts.t.Fatalf("dial: %v", err)
	}
	ts.t.Cleanup(func() { conn.Close() })
	c := &sioWS{t: ts.t, conn: conn}
	if open := c.read(); !strings.HasPrefix(open, `0{"sid":"`) || !strings.Contains(open, `"upgrades":[]`) {
		ts.t.Fatalf("open packet %q", open)
	}
	return c
}

func (c *sioWS) send(pkt string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(pkt)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet, failing the test after a generous bound.
func (c *sioWS) read() string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, b, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return string(b)
}

// readUntil returns the first packet with prefix, skipping others.
func (c *sioWS) readUntil(prefix string) string {
	c.t.Helper()
	for {
		if p := c.read(); strings.HasPrefix(p, prefix) {
			return p
		}
	}
}

// TestSocketIODirectWebSocket: a socket that connects over WebSocket from
// the start is a hub client written directly (no Engine.IO session): its
// CONNECT, acks, publications with their recovery offset, Engine.IO pings
// from the hub's heartbeat, and the end of a socket that sends a malformed
// packet (counted, and its hub client gone).
func TestSocketIODirectWebSocket(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.PingInterval, c.PongTimeout = 200*time.Millisecond, 5*time.Second })
	c := ts.dialSIO()
	c.send("2probe")
	if p := c.read(); p != "3probe" {
		t.Fatalf("probe answer %q", p)
	}
	c.send(`40{"token":"` + token(t, "u1", "42") + `"}`)
	if p := c.read(); !strings.HasPrefix(p, `40{"sid":"`) || !strings.Contains(p, `"pid":"`) {
		t.Fatalf("connect answer %q", p)
	}
	if n := ts.srv.Hub().NumClients(); n != 1 {
		t.Fatalf("%d hub clients, want 1", n)
	}
	c.send(`421["subscribe","org:42"]`)
	if p := c.readUntil("431"); !strings.HasPrefix(p, `431[{"ok":true,"channel":"org:42"`) {
		t.Fatalf("subscribe ack %q", p)
	}
	c.send(`422["subscribe","org:7"]`)
	if p := c.readUntil("432"); !strings.Contains(p, `"ok":false`) {
		t.Fatalf("another org's room: %q", p)
	}
	if code, _ := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","event":"metrics","data":{"n":1}}`); code != 200 {
		t.Fatalf("publish: %d", code)
	}
	p := c.readUntil(`42["metrics"`)
	if !strings.HasPrefix(p, `42["metrics",{"type":"metrics","channel":"org:42","data":{"n":1},"offset":1,`) || !strings.HasSuffix(p, `"]`) {
		t.Fatalf("delivery %q", p)
	}
	// The hub's heartbeat pings every --ping-interval; a pong keeps the
	// socket open.
	c.readUntil("2")
	c.send("3")
	// A malformed Socket.IO packet ends the socket.
	c.send(`42{}`)
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, _, err := c.conn.ReadMessage(); err != nil {
			break
		}
	}
	eventually(t, 10*time.Second, "the hub client to go", func() bool { return ts.srv.Hub().NumClients() == 0 })
	if !containsLine(ts.metricsText(), `herald_socketio_errors_total{kind="sio_bad_packet"}`) {
		t.Error("malformed packet not counted")
	}
	// A browser page of another origin is refused before the upgrade.
	h := http.Header{"Origin": {"https://elsewhere.example"}}
	if _, res, err := websocket.DefaultDialer.Dial("ws://"+ts.addr+"/socket.io/?EIO=4&transport=websocket", h); err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("another origin: %v %v", res, err)
	}
	// Refused without a token: CONNECT_ERROR, the socket stays open for
	// another CONNECT.
	d := ts.dialSIO()
	d.send("40")
	if p := d.read(); p != `44{"message":"unauthorized: missing","data":{"code":"unauthorized"}}` {
		t.Fatalf("refusal %q", p)
	}
	d.send(`40{"token":"` + token(t, "u2", "42") + `"}`)
	if p := d.read(); !strings.HasPrefix(p, `40{"sid":"`) {
		t.Fatalf("connect after a refusal %q", p)
	}
}

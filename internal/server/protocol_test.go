package server_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

var rfc3339ms = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

func TestConnectedFrame(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.PingInterval = 25 * time.Second; c.PongTimeout = time.Minute })
	c := ts.dial("alice", "42")
	m := c.Connected
	if m["userId"] != "alice" || m["org"] != "42" {
		t.Fatalf("connected = %v", m)
	}
	if id, _ := m["clientId"].(string); len(id) < 16 {
		t.Fatalf("clientId %v too short", m["clientId"])
	}
	if m["pingInterval"] != float64(25000) {
		t.Fatalf("pingInterval = %v, want 25000 (ms)", m["pingInterval"])
	}
	if ts, _ := m["timestamp"].(string); !rfc3339ms.MatchString(ts) {
		t.Fatalf("timestamp %q is not RFC 3339 with milliseconds", ts)
	}
}

// TestSeedWscatSession replays the seed's testing section: insecure query
// auth, subscribe to chat, ping → pong.
func TestSeedWscatSession(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.InsecureQueryAuth = true })
	c := ts.dialURL(ts.wsURL("userId=test&role=member"), nil)
	if c.Connected["userId"] != "test" || c.Connected["role"] != "member" {
		t.Fatalf("connected = %v", c.Connected)
	}
	c.sendRaw([]byte(`{"type":"subscribe","channel":"chat"}`))
	if m := c.expect("subscribed"); m["channel"] != "chat" {
		t.Fatalf("ack = %v", m)
	}
	c.sendRaw([]byte(`{"type":"ping"}`))
	m := c.expect("pong")
	if ts, _ := m["timestamp"].(string); !rfc3339ms.MatchString(ts) {
		t.Fatalf("pong timestamp %v", m)
	}
	if len(m) != 2 {
		t.Fatalf("pong without id must be exactly {type,timestamp}: %v", m)
	}
}

func TestMessageReachesOthersNotSender(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	b := ts.dial("bob", "")
	c := ts.dial("carol", "")
	a.subscribe("chat")
	b.subscribe("chat")
	// carol is not subscribed and publishes.
	c.send(map[string]any{"type": "message", "channel": "chat", "data": map[string]any{"text": "hi"}, "id": 7})
	if m := c.expect("published"); m["id"] != float64(7) || m["channel"] != "chat" {
		t.Fatalf("published ack = %v", m)
	}
	for _, r := range []*wsClient{a, b} {
		m := r.expect("message")
		if m["channel"] != "chat" || m["from"] != "carol" {
			t.Fatalf("delivery = %v", m)
		}
		if d, _ := m["data"].(map[string]any); d["text"] != "hi" {
			t.Fatalf("data = %v", m["data"])
		}
		if s, _ := m["timestamp"].(string); !rfc3339ms.MatchString(s) {
			t.Fatalf("timestamp = %v", m["timestamp"])
		}
	}
	// The sender is excluded even when subscribed.
	a.send(map[string]any{"type": "message", "channel": "chat", "data": "from a"})
	if m := b.expect("message"); m["data"] != "from a" || m["from"] != "alice" {
		t.Fatalf("b got %v", m)
	}
	a.sync() // the pong must be the next frame: no echo of a's own message
}

func TestEchoNamespace(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		c.Namespaces = []config.Namespace{{Prefix: "room", Echo: true}}
	})
	a := ts.dial("alice", "")
	a.subscribe("room:1")
	a.send(map[string]any{"type": "message", "channel": "room:1", "data": 1})
	if m := a.expect("message"); m["from"] != "alice" {
		t.Fatalf("echo = %v", m)
	}
}

func TestNamespacePublishDisabled(t *testing.T) {
	no := false
	ts := start(t, func(c *config.Config) {
		c.Namespaces = []config.Namespace{{Prefix: "news", Publish: &no}}
	})
	a := ts.dial("alice", "")
	a.subscribe("news")
	a.send(map[string]any{"type": "message", "channel": "news:today", "data": 1, "id": "p"})
	if m := a.expectError("forbidden"); m["id"] != "p" {
		t.Fatalf("error lacks id: %v", m)
	}
}

func TestUnsubscribe(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	b := ts.dial("bob", "")
	a.subscribe("chat")
	a.send(map[string]any{"type": "unsubscribe", "channel": "chat", "id": "u1"})
	if m := a.expect("unsubscribed"); m["channel"] != "chat" || m["id"] != "u1" {
		t.Fatalf("ack = %v", m)
	}
	b.send(map[string]any{"type": "message", "channel": "chat", "data": 1})
	b.sync()
	a.sync() // no message in between
	// Idempotent: unsubscribing again is acknowledged.
	a.send(map[string]any{"type": "unsubscribe", "channel": "chat"})
	a.expect("unsubscribed")
}

func TestSubscribeIsIdempotent(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	b := ts.dial("bob", "")
	a.subscribe("chat")
	a.subscribe("chat")
	b.send(map[string]any{"type": "message", "channel": "chat", "data": 1})
	a.expect("message")
	a.sync() // exactly one delivery
}

// TestErrorFramesCarryKnownIDAndChannel: a command with one member of the
// wrong type is answered with an error that still names its channel and
// echoes its id, and unsubscribe's invalid_channel error names the channel
// as subscribe's does.
func TestErrorFramesCarryKnownIDAndChannel(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	for _, raw := range []string{
		`{"type":"subscribe","channel":"chat","id":"s1","events":"message"}`,
		`{"type":"history","channel":"chat","id":"s1","limit":"10"}`,
		`{"type":"subscribe","channel":"chat","id":"s1","since":{"offset":-1,"epoch":"e"}}`,
	} {
		a.sendRaw([]byte(raw))
		if m := a.expectError("bad_request"); m["id"] != "s1" || m["channel"] != "chat" {
			t.Errorf("%s: error %v lacks the id or channel it carried", raw, m)
		}
	}
	for _, typ := range []string{"subscribe", "unsubscribe"} {
		a.sendRaw([]byte(`{"type":"` + typ + `","channel":"a/b","id":"s2"}`))
		if m := a.expectError("invalid_channel"); m["id"] != "s2" || m["channel"] != "a/b" {
			t.Errorf("%s: error %v lacks the id or channel it carried", typ, m)
		}
	}
}

func TestErrorFramesKeepConnectionOpen(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "7")
	cases := []struct {
		name string
		raw  string
		code string
	}{
		{"bad json", `{"type":`, "bad_json"},
		{"not an object", `[1,2]`, "bad_json"},
		{"json string", `"subscribe"`, "bad_json"},
		{"empty", ``, "bad_json"},
		{"missing type", `{"channel":"chat"}`, "unknown_type"},
		{"unknown type", `{"type":"dance"}`, "unknown_type"},
		{"wrong field type", `{"type":"subscribe","channel":5}`, "bad_request"},
		{"bad id", `{"type":"ping","id":{"x":1}}`, "bad_request"},
		{"missing channel", `{"type":"subscribe"}`, "channel_required"},
		{"missing channel publish", `{"type":"message","data":1}`, "channel_required"},
		{"invalid channel", `{"type":"subscribe","channel":"has space"}`, "invalid_channel"},
		{"too long channel", `{"type":"subscribe","channel":"` + strings.Repeat("a", 201) + `"}`, "invalid_channel"},
		{"invalid channel unsubscribe", `{"type":"unsubscribe","channel":"a/b"}`, "invalid_channel"},
		{"other org", `{"type":"subscribe","channel":"org:8"}`, "forbidden"},
		{"other user", `{"type":"subscribe","channel":"user:bob"}`, "forbidden"},
		{"system publish", `{"type":"message","channel":"system","data":1}`, "forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a.t = t
			a.sendRaw([]byte(tc.raw))
			a.expectError(tc.code)
			a.sync()
		})
	}
	a.t = t
	if err := a.conn.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	a.expectError("binary_not_supported")
	a.sync()
	// The id of a failing command is echoed.
	a.send(map[string]any{"type": "subscribe", "channel": "org:8", "id": "x1"})
	if m := a.expectError("forbidden"); m["id"] != "x1" || m["channel"] != "org:8" {
		t.Fatalf("error = %v", m)
	}
}

func TestOversizeFrameCloses1009(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxMessageBytes = 1024 })
	a := ts.dial("alice", "")
	a.sendRaw([]byte(`{"type":"message","channel":"chat","data":"` + strings.Repeat("x", 2000) + `"}`))
	if code := a.expectClose(5 * time.Second); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	eventually(t, 5*time.Second, "client removed", func() bool { return ts.srv.Hub().NumClients() == 0 })
	if !containsLine(ts.metricsText(), `herald_disconnects_total{code="1009"} 1`) {
		t.Fatal("no disconnect metric for 1009")
	}
}

// TestClientCloseCodes: herald echoes a client's close code, refuses one
// outside RFC 6455's ranges with 1002, and counts a client's own
// application codes under one label, so that clients cannot grow the
// metric by a series per code.
func TestClientCloseCodes(t *testing.T) {
	ts := start(t, nil)
	for _, c := range []struct {
		sent, want int
	}{{1000, 1000}, {3456, 3456}, {4321, 4321}, {4002, 4002}, {5000, 1002}, {65441, 1002}, {1015, 1002}} {
		a := ts.dial("alice", "")
		if err := a.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.sent, ""), time.Now().Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if code := a.expectClose(5 * time.Second); code != c.want {
			t.Fatalf("close %d answered with %d, want %d", c.sent, code, c.want)
		}
	}
	eventually(t, 5*time.Second, "clients removed", func() bool { return ts.srv.Hub().NumClients() == 0 })
	text := ts.metricsText()
	for line, want := range map[string]bool{
		`herald_disconnects_total{code="1000"} 1`:        true,
		`herald_disconnects_total{code="application"} 2`: true, // 3456 and 4321
		`herald_disconnects_total{code="4002"} 1`:        true, // herald's own code keeps its number
		`herald_disconnects_total{code="1002"} 3`:        true,
		`herald_disconnects_total{code="3456"}`:          false,
		`herald_disconnects_total{code="65441"}`:         false,
	} {
		if containsLine(text, line) != want {
			t.Errorf("metrics have %s: %v, want %v", line, !want, want)
		}
	}
}

func TestInvalidUTF8Closes1007(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	a.sendRaw([]byte("{\"type\":\"ping\",\"id\":\"\xff\xfe\"}"))
	if code := a.expectClose(5 * time.Second); code != websocket.CloseInvalidFramePayloadData {
		t.Fatalf("close code %d, want 1007", code)
	}
}

func TestIDEchoShapes(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	for _, id := range []string{`"abc"`, `42`, `-1.5`} {
		a.sendRaw([]byte(`{"type":"subscribe","channel":"chat","id":` + id + `}`))
		m := a.expect("subscribed")
		got, _ := json.Marshal(m["id"])
		var want any
		_ = json.Unmarshal([]byte(id), &want)
		w, _ := json.Marshal(want)
		if string(got) != string(w) {
			t.Fatalf("id %s echoed as %s", id, got)
		}
	}
}

// TestCommandsOffTheExactPath: frames the command decoder leaves to
// encoding/json — other casing, escapes, unknown members — still work end
// to end, as they did before it had a path of its own.
func TestCommandsOffTheExactPath(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	b := ts.dial("bob", "")
	a.sendRaw([]byte(`{"Type":"subscribe","CHANNEL":"chat","id":1}`))
	if m := a.expect("subscribed"); m["channel"] != "chat" || m["id"] != float64(1) {
		t.Fatalf("subscribed = %v", m)
	}
	b.sendRaw([]byte(`{"type":"subscribe","channel":"c\u0068at","client":"v2","id":2}`))
	if m := b.expect("subscribed"); m["channel"] != "chat" || m["id"] != float64(2) {
		t.Fatalf("subscribed = %v", m)
	}
	b.sendRaw([]byte(`{"type":"message","channel":"chat","data":{"text":"caf\u00e9"},"Event":"note"}`))
	if m := a.expect("message"); m["event"] != "note" || m["data"].(map[string]any)["text"] != "café" {
		t.Fatalf("delivery = %v", m)
	}
	b.sendRaw([]byte(`{"type":"message","channel":"chat","limit":1.5}`))
	b.expectError("bad_request")
}

func TestAppPingWithoutSubscription(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	a.send(map[string]any{"type": "ping", "id": 1})
	if m := a.expect("pong"); m["id"] != float64(1) {
		t.Fatalf("pong = %v", m)
	}
	// A client-sent pong is accepted silently.
	a.send(map[string]any{"type": "pong"})
	a.sync()
}

// TestWSPathUnderAPI: the seed-003 clients connect to /api/socket.
func TestWSPathUnderAPI(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.WSPath = "/api/socket"; c.InsecureQueryAuth = true })
	c := ts.dialURL("ws://"+ts.addr+"/api/socket?userId=u1&org=42", nil)
	c.subscribe("org:42")
	if status, body := ts.api("GET", "/api/stats", testAPIKey, ""); status != 200 || body["clients"] != float64(1) {
		t.Fatalf("API still served next to /api/socket: %d %v", status, body)
	}
}

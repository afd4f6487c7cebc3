package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
)

func TestAPIKeyRequired(t *testing.T) {
	ts := start(t, nil)
	for _, key := range []string{"", "wrong-key-0123456789"} {
		status, body := ts.api("POST", "/api/publish", key, `{"channel":"chat","data":1}`)
		if status != http.StatusUnauthorized || body["error"] != "unauthorized" {
			t.Fatalf("key %q: %d %v", key, status, body)
		}
	}
	// Authorization: apikey KEY works as well.
	req, _ := http.NewRequest("GET", ts.httpURL("/api/stats"), nil)
	req.Header.Set("Authorization", "apikey "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("apikey auth: %v %v", err, resp)
	}
	resp.Body.Close()

	closed := start(t, func(c *config.Config) { c.APIKeys = nil })
	status, body := closed.api("GET", "/api/stats", "anything-at-all-123", "")
	if status != http.StatusForbidden {
		t.Fatalf("no keys configured: %d %v", status, body)
	}
	status, body = closed.api("POST", "/call", "zantara-internal-dev-key-2025", `{"key":"websocket.stats"}`)
	if status != http.StatusForbidden || body["ok"] != false {
		t.Fatalf("/call with no keys: %d %v", status, body)
	}
}

func TestAPIPublishBroadcastSend(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	b := ts.dial("bob", "")
	a.subscribe("chat")
	b.subscribe("news")

	status, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"chat","data":{"x":1}}`)
	if status != 200 || body["ok"] != true || body["delivered"] != float64(1) {
		t.Fatalf("publish: %d %v", status, body)
	}
	if m := a.expect("message"); m["channel"] != "chat" {
		t.Fatalf("a got %v", m)
	}

	status, body = ts.api("POST", "/api/broadcast", testAPIKey, `{"channels":["chat","news","empty"],"data":"all"}`)
	if status != 200 || body["delivered"] != float64(2) {
		t.Fatalf("broadcast: %d %v", status, body)
	}
	a.expect("message")
	if m := b.expect("message"); m["channel"] != "news" || m["data"] != "all" {
		t.Fatalf("b got %v", m)
	}

	status, body = ts.api("POST", "/api/send", testAPIKey, `{"userId":"bob","channel":"chat","data":"direct"}`)
	if status != 200 || body["delivered"] != float64(1) {
		t.Fatalf("send: %d %v", status, body)
	}
	if m := b.expect("message"); m["channel"] != "chat" || m["data"] != "direct" {
		t.Fatalf("b got %v", m)
	}
	a.sync()
}

func TestSendToUserWithTwoConnections(t *testing.T) {
	ts := start(t, nil)
	p1 := ts.dial("pat", "")
	p2 := ts.dial("pat", "")
	other := ts.dial("quinn", "")
	status, body := ts.api("POST", "/api/send", testAPIKey, `{"userId":"pat","channel":"documents","data":{"documentId":"doc_123","status":"processing","progress":75}}`)
	if status != 200 || body["delivered"] != float64(2) {
		t.Fatalf("send: %d %v", status, body)
	}
	for _, c := range []*wsClient{p1, p2} {
		m := c.expect("message")
		d, _ := m["data"].(map[string]any)
		if m["channel"] != "documents" || d["progress"] != float64(75) {
			t.Fatalf("got %v", m)
		}
	}
	other.sync()
	status, body = ts.api("POST", "/api/send", testAPIKey, `{"userId":"nobody","channel":"chat","data":1}`)
	if status != 200 || body["delivered"] != float64(0) {
		t.Fatalf("send to absent user: %d %v", status, body)
	}
}

func TestAPIBatch(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	a.subscribe("chat")
	status, body := ts.api("POST", "/api/batch", testAPIKey, `{"commands":[
		{"method":"publish","channel":"chat","data":1},
		{"method":"publish","channel":"bad channel","data":2},
		{"method":"send","userId":"alice","channel":"x","data":3},
		{"method":"explode"}
	]}`)
	if status != 200 {
		t.Fatalf("batch: %d %v", status, body)
	}
	res, _ := body["results"].([]any)
	if len(res) != 4 {
		t.Fatalf("results = %v", body)
	}
	want := []struct {
		ok   bool
		code string
	}{{true, ""}, {false, "invalid_channel"}, {true, ""}, {false, "bad_request"}}
	for i, w := range want {
		r := res[i].(map[string]any)
		if r["ok"] != w.ok || (w.code != "" && r["error"] != w.code) {
			t.Fatalf("result %d = %v, want ok=%v code=%q", i, r, w.ok, w.code)
		}
	}
	if m := a.expect("message"); m["data"] != float64(1) {
		t.Fatalf("got %v", m)
	}
	if m := a.expect("message"); m["data"] != float64(3) {
		t.Fatalf("got %v", m)
	}

	// A channel listed twice in a broadcast is published to once; an
	// idempotencyKey on a batch broadcast is refused, not ignored.
	status, body = ts.api("POST", "/api/batch", testAPIKey, `{"commands":[
		{"method":"broadcast","channels":["chat","chat"],"data":4},
		{"method":"broadcast","channels":["chat"],"data":5,"idempotencyKey":"k"}
	]}`)
	res, _ = body["results"].([]any)
	if status != 200 || len(res) != 2 || res[0].(map[string]any)["delivered"] != float64(1) ||
		res[1].(map[string]any)["error"] != "bad_request" {
		t.Fatalf("batch broadcasts: %d %v", status, body)
	}
	if status, body = ts.api("POST", "/api/broadcast", testAPIKey, `{"channels":["chat","chat","chat"],"data":6}`); status != 200 || body["delivered"] != float64(1) {
		t.Fatalf("broadcast: %d %v", status, body)
	}
	for _, want := range []float64{4, 6} {
		if m := a.expect("message"); m["data"] != want {
			t.Fatalf("got %v, want data %v", m, want)
		}
	}
	a.expectNothing(100 * time.Millisecond)
}

func TestAPIStatsChannelsDisconnect(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	b := ts.dial("bob", "")
	a.subscribe("chat")
	b.subscribe("chat")
	b.subscribe("notifications")
	status, body := ts.api("GET", "/api/stats", testAPIKey, "")
	if status != 200 || body["clients"] != float64(2) || body["subscriptions"] != float64(3) || body["channels"] != float64(2) {
		t.Fatalf("stats: %d %v", status, body)
	}
	status, body = ts.api("GET", "/api/channels", testAPIKey, "")
	chs, _ := body["channels"].([]any)
	if status != 200 || len(chs) != 2 {
		t.Fatalf("channels: %d %v", status, body)
	}
	if c := chs[0].(map[string]any); c["name"] != "chat" || c["subscribers"] != float64(2) {
		t.Fatalf("channels[0] = %v", c)
	}

	status, body = ts.api("POST", "/api/disconnect", testAPIKey, `{"clientId":"`+b.Connected["clientId"].(string)+`"}`)
	if status != 200 || body["disconnected"] != float64(1) {
		t.Fatalf("disconnect: %d %v", status, body)
	}
	if code := b.expectClose(5e9); code != 4000 {
		t.Fatalf("close code %d, want 4000", code)
	}
	status, body = ts.api("POST", "/api/disconnect", testAPIKey, `{"userId":"alice"}`)
	if status != 200 || body["disconnected"] != float64(1) {
		t.Fatalf("disconnect: %d %v", status, body)
	}
	if code := a.expectClose(5e9); code != 4000 {
		t.Fatalf("close code %d, want 4000", code)
	}
	eventually(t, 5e9, "empty hub", func() bool {
		_, body := ts.api("GET", "/api/stats", testAPIKey, "")
		return body["clients"] == float64(0) && body["channels"] == float64(0)
	})
}

func TestAPIErrors(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxMessageBytes = 4096 })
	cases := []struct {
		method, path, body string
		status             int
		code               string
		message            string // when set, what the message must say
	}{
		{"POST", "/api/publish", `{"channel":`, 400, "bad_json", "body is not valid JSON: unexpected end of JSON input"},
		{"POST", "/api/publish", `{"channel":"c","data":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, 400, "bad_json", "exceeded max depth"},
		{"POST", "/api/publish", `{"channel" "c"}`, 400, "bad_json", "invalid character '\"' after object key (at byte 12)"},
		{"POST", "/api/publish", `[]`, 400, "bad_request", "body must be a JSON object"},
		{"POST", "/api/publish", `{"channel":5}`, 400, "bad_request", ""},
		{"POST", "/api/publish", `{"data":1}`, 400, "channel_required", ""},
		{"POST", "/api/publish", `{"channel":"a b","data":1}`, 400, "invalid_channel", ""},
		{"POST", "/api/publish", `{"channel":"c","data":"` + strings.Repeat("x", 100000) + `"}`, 413, "too_large", ""},
		{"POST", "/api/broadcast", `{"channels":[],"data":1}`, 400, "channel_required", ""},
		{"POST", "/api/send", `{"channel":"c","data":1}`, 400, "bad_request", ""},
		{"POST", "/api/disconnect", `{}`, 400, "bad_request", ""},
		{"POST", "/api/batch", `{"commands":[]}`, 400, "bad_request", ""},
		{"GET", "/api/publish", ``, 404, "not_found", ""},
		{"GET", "/api/nothing", ``, 404, "not_found", ""},
		{"GET", "/call", ``, 404, "not_found", "GET /call"},
		{"DELETE", "/call", ``, 404, "not_found", ""},
	}
	for _, tc := range cases {
		status, body := ts.api(tc.method, tc.path, testAPIKey, tc.body)
		msg, _ := body["message"].(string)
		if status != tc.status || body["error"] != tc.code || msg == "" || !strings.Contains(msg, tc.message) {
			t.Errorf("%s %s %.40q: %d %v, want %d %s %q", tc.method, tc.path, tc.body, status, body, tc.status, tc.code, tc.message)
		}
	}
}

// TestCallCompat exercises the seed's POST /call admin handlers.
func TestCallCompat(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("antonello@balizero.com", "")
	b := ts.dial("bob", "")
	a.subscribe("chat")
	b.subscribe("chat")
	b.subscribe("notifications")

	status, body := ts.api("POST", "/call", testAPIKey, `{"key":"websocket.stats"}`)
	data, _ := body["data"].(map[string]any)
	if status != 200 || body["ok"] != true || data["enabled"] != true || data["activeClients"] != float64(2) {
		t.Fatalf("stats: %d %v", status, body)
	}
	chs, _ := data["channels"].([]any)
	if len(chs) != 2 || chs[0].(map[string]any)["name"] != "chat" || chs[0].(map[string]any)["subscribers"] != float64(2) {
		t.Fatalf("stats channels: %v", chs)
	}

	status, body = ts.api("POST", "/call", testAPIKey, `{"key":"websocket.broadcast","params":{"channel":"notifications","data":{"type":"update","message":"New feature released"}}}`)
	if status != 200 || body["ok"] != true {
		t.Fatalf("broadcast: %d %v", status, body)
	}
	if m := b.expect("message"); m["channel"] != "notifications" {
		t.Fatalf("b got %v", m)
	}

	status, body = ts.api("POST", "/call", testAPIKey, `{"key":"websocket.send","params":{"userId":"antonello@balizero.com","channel":"chat","data":{"message":"Your document is ready"}}}`)
	if status != 200 || body["ok"] != true {
		t.Fatalf("send: %d %v", status, body)
	}
	if m := a.expect("message"); m["data"].(map[string]any)["message"] != "Your document is ready" {
		t.Fatalf("a got %v", m)
	}

	// A broadcast with an idempotencyKey seen before says it was a duplicate.
	bc := `{"key":"websocket.broadcast","params":{"channel":"notifications","data":1,"idempotencyKey":"k1"}}`
	if status, body = ts.api("POST", "/call", testAPIKey, bc); status != 200 || body["data"].(map[string]any)["duplicate"] != nil {
		t.Fatalf("first keyed broadcast: %d %v", status, body)
	}
	b.expect("message")
	if status, body = ts.api("POST", "/call", testAPIKey, bc); status != 200 || body["data"].(map[string]any)["duplicate"] != true {
		t.Fatalf("repeated keyed broadcast: %d %v, want duplicate:true", status, body)
	}

	for _, tc := range []struct {
		key, body string
		status    int
		error     string // when set, what the error must say
	}{
		{testAPIKey, `{"key":"websocket.nope"}`, 400, `unknown handler: "websocket.nope"`},
		{testAPIKey, `{"key":"websocket.broadcast"}`, 400, `"params" is required`},
		{testAPIKey, `{"key":"websocket.broadcast","params":{"channel":"bad channel"}}`, 400, "invalid channel name"},
		{testAPIKey, `{"key":"websocket.broadcast","params":"x"}`, 400, "params: params must be a JSON object"},
		{testAPIKey, `{"key":"websocket.send","params":{"userId":5}}`, 400, `params: field "userId" has the wrong type`},
		{testAPIKey, `not json`, 400, ""},
		{"", `{"key":"websocket.stats"}`, 401, ""},
		{"zantara-internal-dev-key-2025", `{"key":"websocket.stats"}`, 401, ""},
	} {
		status, body := ts.api("POST", "/call", tc.key, tc.body)
		msg, _ := body["error"].(string)
		if status != tc.status || body["ok"] != false || msg == "" || msg != tc.error && tc.error != "" && !strings.Contains(msg, tc.error) || strings.Contains(msg, "server.") {
			t.Errorf("%s: %d %v, want %d %q", tc.body, status, body, tc.status, tc.error)
		}
	}
}

func TestHealthAndMetrics(t *testing.T) {
	ts := start(t, nil)
	status, body := ts.api("GET", "/healthz", "", "")
	if status != 200 || body["status"] != "ok" {
		t.Fatalf("healthz: %d %v", status, body)
	}
	a := ts.dial("alice", "")
	a.subscribe("chat")
	text := ts.metricsText()
	for _, want := range []string{"herald_connections 1", "herald_subscriptions 1", "herald_channels 1", "herald_messages_in_total", "herald_bytes_out_total", "herald_slow_consumer_closes_total", "herald_rate_limited_total"} {
		if !containsLine(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

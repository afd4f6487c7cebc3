package server_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

// subscribeSince subscribes with a since position and returns the ack.
func (c *wsClient) subscribeSince(ch string, since map[string]any, extra map[string]any) map[string]any {
	c.t.Helper()
	cmd := map[string]any{"type": "subscribe", "channel": ch, "since": since}
	for k, v := range extra {
		cmd[k] = v
	}
	c.send(cmd)
	return c.expect("subscribed")
}

func num(v any) uint64 {
	f, _ := v.(float64)
	return uint64(f)
}

// TestRecoverAfterDisconnect: a subscriber drops, 100 publications go out
// through the API, and it reconnects with its last offset: it gets exactly
// those 100, in order, then live ones.
func TestRecoverAfterDisconnect(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "42")
	ack := a.subscribeSince("org:42", map[string]any{"offset": 0, "epoch": "none"}, nil)
	if ack["recovered"] != false || ack["epoch"] == "" {
		t.Fatalf("first ack %v", ack)
	}
	epoch := ack["epoch"].(string)
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":"before"}`)
	m := a.expect("message")
	last := num(m["offset"])
	if last != 1 {
		t.Fatalf("first offset %v", m)
	}
	a.conn.Close()

	for i := 1; i <= 100; i++ {
		if status, body := ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"org:42","data":%d}`, i)); status != 200 || num(body["offset"]) != uint64(i+1) {
			t.Fatalf("publish %d: %d %v", i, status, body)
		}
	}
	b := ts.dial("alice", "42")
	ack = b.subscribeSince("org:42", map[string]any{"offset": last, "epoch": epoch}, nil)
	if ack["recovered"] != true || num(ack["offset"]) != 101 || ack["epoch"] != epoch {
		t.Fatalf("recovery ack %v", ack)
	}
	for i := 1; i <= 100; i++ {
		m := b.expect("message")
		if m["data"] != float64(i) || num(m["offset"]) != uint64(i+1) {
			t.Fatalf("replay %d: %v", i, m)
		}
	}
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":"live"}`)
	if m := b.expect("message"); m["data"] != "live" || num(m["offset"]) != 102 {
		t.Fatalf("live: %v", m)
	}
	if !containsLine(ts.metricsText(), `herald_recoveries_total{recovered="true"} 1`) {
		t.Error("recovery metric missing")
	}
}

// TestRecoverWhilePublishing: publishers keep publishing while the subscriber
// recovers; replay and live together hold every offset exactly once, in order.
func TestRecoverWhilePublishing(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		c.RateLimit = 0
		c.Namespaces = []config.Namespace{{Prefix: "org", HistorySize: 10000}}
	})
	pub := ts.dial("pub", "7")
	first := func() map[string]any {
		pub.send(map[string]any{"type": "message", "channel": "org:7", "data": 0, "id": "p0"})
		return pub.expect("published")
	}()
	epoch := first["epoch"].(string)
	for round := 0; round < 20; round++ {
		const n = 200
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				if err := pub.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","channel":"org:7","data":1}`)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		// Subscribe from the very first offset while publishing goes on.
		c := ts.dial(fmt.Sprint("sub", round), "7")
		ack := c.subscribeSince("org:7", map[string]any{"offset": num(first["offset"]), "epoch": epoch}, nil)
		if ack["recovered"] != true {
			t.Fatalf("round %d: ack %v", round, ack)
		}
		wg.Wait()
		pub.sync() // every publication of this round has been accepted
		want := num(first["offset"]) + uint64((round+1)*n)
		next := num(first["offset"]) + 1
		for next <= want {
			m := c.expect("message")
			if got := num(m["offset"]); got != next {
				t.Fatalf("round %d: offset %d, want %d", round, got, next)
			}
			next++
		}
		c.sync() // nothing after the last offset: no duplicates
		c.conn.Close()
	}
}

func TestEpochChangesAfterRestart(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "1")
	a.subscribe("org:1")
	_, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:1","data":1}`)
	epoch, off := body["epoch"].(string), num(body["offset"])
	a.expect("message")
	ts.stop()

	ts2 := start(t, nil) // the in-memory broker lost everything
	b := ts2.dial("alice", "1")
	ack := b.subscribeSince("org:1", map[string]any{"offset": off, "epoch": epoch}, nil)
	if ack["recovered"] != false || ack["epoch"] == epoch || num(ack["offset"]) != 0 {
		t.Fatalf("after restart: %v", ack)
	}
}

func TestGapOlderThanHistory(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		c.Namespaces = []config.Namespace{{Prefix: "feed", HistorySize: 5}}
	})
	var epoch string
	for i := 1; i <= 12; i++ {
		_, body := ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"feed","data":%d}`, i))
		epoch = body["epoch"].(string)
	}
	a := ts.dial("alice", "")
	ack := a.subscribeSince("feed", map[string]any{"offset": 3, "epoch": epoch}, nil)
	if ack["recovered"] != false || num(ack["offset"]) != 12 {
		t.Fatalf("ack %v", ack)
	}
	// What history still holds is replayed; the app knows to refetch.
	for want := uint64(8); want <= 12; want++ {
		if m := a.expect("message"); num(m["offset"]) != want {
			t.Fatalf("got %v, want offset %d", m, want)
		}
	}
	a.sync()
	// Within history: recovered.
	ack = a.subscribeSince("feed", map[string]any{"offset": 10, "epoch": epoch}, nil)
	if ack["recovered"] != true {
		t.Fatalf("ack %v", ack)
	}
	a.expect("message")
	a.expect("message")
	a.sync()
}

// TestHistoryBudget: with --history-max-bytes reached, a channel keeps only
// what fits, recovery past the rest says recovered:false and replays what
// is kept, deliveries are unaffected, and /metrics shows the bytes held and
// the publications dropped.
func TestHistoryBudget(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		c.HistoryMaxBytes = 5000 // four 1,000-byte publications and their overhead
		c.Namespaces = []config.Namespace{{Prefix: "feed", HistorySize: 100}}
	})
	a := ts.dial("alice", "")
	a.subscribe("feed")
	data := `"` + strings.Repeat("x", 998) + `"`
	var epoch string
	for i := 1; i <= 10; i++ {
		_, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"feed","data":`+data+`}`)
		epoch = body["epoch"].(string)
		if m := a.expect("message"); num(m["offset"]) != uint64(i) {
			t.Fatalf("delivery %d: %v", i, m)
		}
	}
	b := ts.dial("bob", "")
	ack := b.subscribeSince("feed", map[string]any{"offset": 0, "epoch": epoch}, nil)
	if ack["recovered"] != false || num(ack["offset"]) != 10 {
		t.Fatalf("ack %v", ack)
	}
	first := num(b.expect("message")["offset"])
	if first < 7 || first > 9 {
		t.Fatalf("the replay starts at offset %d, want the newest few that fit in 5000 bytes", first)
	}
	for want := first + 1; want <= 10; want++ {
		if m := b.expect("message"); num(m["offset"]) != want {
			t.Fatalf("got %v, want offset %d", m, want)
		}
	}
	b.sync()
	text := ts.metricsText()
	held := metricLine(t, text, "herald_history_bytes")
	dropped := metricLine(t, text, "herald_history_dropped_total")
	if held <= 0 || held > 5000 || dropped != float64(10-(11-first)) {
		t.Fatalf("herald_history_bytes %v (want 1..5000), herald_history_dropped_total %v (want %d)", held, dropped, 10-(11-first))
	}
}

// startWithBigHistory starts a server whose channel "feed" holds 20
// publications of 1 MiB (offsets 1–20): more than one replay or history
// reply may carry. It returns the channel's epoch.
func startWithBigHistory(t *testing.T) (*testServer, string) {
	t.Helper()
	ts := start(t, func(c *config.Config) {
		c.Namespaces = []config.Namespace{{Prefix: "feed", HistorySize: 100}}
	})
	data := `"` + strings.Repeat("x", 1<<20-100) + `"`
	var epoch string
	for range 20 {
		status, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"feed","data":`+data+`}`)
		if status != 200 {
			t.Fatalf("publish: %d %v", status, body)
		}
		epoch = body["epoch"].(string)
	}
	return ts, epoch
}

// TestHistoryReplyIsBounded: a history reply is at most 16 MiB, over
// WebSocket and the API alike: the newest publications without since, the
// oldest after it with since, and "truncated" when some were left out. The
// WebSocket client stays connected; the reply used to be the whole 20 MiB,
// which the 1 MiB queue bound answered by closing the client (4008).
func TestHistoryReplyIsBounded(t *testing.T) {
	ts, epoch := startWithBigHistory(t)
	a := ts.dial("alice", "")
	offsets := func(m map[string]any) (first, last uint64, n int) {
		pubs, _ := m["publications"].([]any)
		if len(pubs) == 0 {
			t.Fatalf("no publications in %v", m["type"])
		}
		return num(pubs[0].(map[string]any)["offset"]), num(pubs[len(pubs)-1].(map[string]any)["offset"]), len(pubs)
	}
	for _, c := range []struct {
		since           map[string]any
		apiQuery        string
		wantFirst, last func(first, last uint64) bool
	}{
		{nil, "", nil, func(_, last uint64) bool { return last == 20 }},
		{map[string]any{"offset": 0, "epoch": epoch}, "&since=0", func(first, _ uint64) bool { return first == 1 }, nil},
	} {
		cmd := map[string]any{"type": "history", "channel": "feed", "id": 1}
		if c.since != nil {
			cmd["since"] = c.since
		}
		a.send(cmd)
		m := a.expect("history")
		first, last, n := offsets(m)
		if m["truncated"] != true || n > 16 || n < 10 || (c.wantFirst != nil && !c.wantFirst(first, last)) || (c.last != nil && !c.last(first, last)) {
			t.Fatalf("since %v: %d publications %d..%d, truncated %v", c.since, n, first, last, m["truncated"])
		}
		status, body := ts.api("GET", "/api/history?channel=feed"+c.apiQuery, testAPIKey, "")
		first, last, n = offsets(body)
		if status != 200 || body["truncated"] != true || n > 16 || n < 10 || (c.wantFirst != nil && !c.wantFirst(first, last)) || (c.last != nil && !c.last(first, last)) {
			t.Fatalf("GET /api/history%s: %d, %d publications %d..%d, truncated %v", c.apiQuery, status, n, first, last, body["truncated"])
		}
	}
	a.sync() // still connected
	// A reply that fits says nothing of truncation.
	a.send(map[string]any{"type": "history", "channel": "feed", "limit": 2})
	if m := a.expect("history"); m["truncated"] != nil {
		t.Fatalf("a reply of 2 publications: truncated %v", m["truncated"])
	}
}

// TestRepeatedReplaysAreBounded: a client that subscribes with since again
// and again without reading gets at most one more replay's worth queued
// behind the one being written; later replays are cut to what fits and say
// recovered:false. Each used to queue a full replay, 16 MiB apiece.
func TestRepeatedReplaysAreBounded(t *testing.T) {
	ts, epoch := startWithBigHistory(t)
	a := ts.dial("alice", "")
	const rounds = 6
	for range rounds { // sent without reading a thing
		a.send(map[string]any{"type": "subscribe", "channel": "feed", "since": map[string]any{"offset": 0, "epoch": epoch}})
		a.send(map[string]any{"type": "unsubscribe", "channel": "feed"})
	}
	acks, replayed := 0, 0
	for acks < rounds {
		_ = a.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := a.conn.ReadMessage()
		if err != nil {
			t.Fatalf("after %d acks and %d replayed bytes: %v", acks, replayed, err)
		}
		switch {
		case strings.HasPrefix(string(b), `{"type":"subscribed"`):
			acks++
		case strings.HasPrefix(string(b), `{"type":"message"`):
			replayed += len(b)
		}
	}
	// One replay in the writer's hands and one queued behind it: 32 MiB,
	// not six times 16.
	if limit := 2 * 16 << 20; replayed > limit {
		t.Fatalf("%d rounds replayed %d bytes, want at most %d", rounds, replayed, limit)
	}
}

// metricLine returns the value of the unlabelled metric name in text.
func metricLine(t *testing.T, text, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

func TestHistoryTTLExpiry(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		// Long enough that the first read comes before it on a loaded machine.
		c.Namespaces = []config.Namespace{{Prefix: "short", HistorySize: 100, HistoryTTL: config.Duration(2 * time.Second)}}
	})
	_, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"short","data":1}`)
	epoch := body["epoch"].(string)
	_, h := ts.api("GET", "/api/history?channel=short", testAPIKey, "")
	if pubs, _ := h["publications"].([]any); len(pubs) != 1 {
		t.Fatalf("history before expiry: %v", h)
	}
	eventually(t, 10*time.Second, "history expired", func() bool {
		_, h = ts.api("GET", "/api/history?channel=short", testAPIKey, "")
		pubs, _ := h["publications"].([]any)
		return len(pubs) == 0
	})
	if num(h["offset"]) != 1 {
		t.Fatalf("history after expiry: %v", h)
	}
	a := ts.dial("alice", "")
	if ack := a.subscribeSince("short", map[string]any{"offset": 0, "epoch": epoch}, nil); ack["recovered"] != false {
		t.Fatalf("recovered across expired history: %v", ack)
	}
}

func TestRecoverByTime(t *testing.T) {
	ts := start(t, nil)
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:9","data":"old"}`)
	time.Sleep(20 * time.Millisecond)
	since := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(20 * time.Millisecond)
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:9","data":"new"}`)
	a := ts.dial("alice", "9")
	ack := a.subscribeSince("org:9", map[string]any{"time": since}, nil)
	if ack["recovered"] != true {
		t.Fatalf("ack %v", ack)
	}
	if m := a.expect("message"); m["data"] != "new" {
		t.Fatalf("got %v", m)
	}
	a.sync()
}

func TestHistoryCommandAndAPI(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		no := false
		c.Namespaces = []config.Namespace{{Prefix: "feed", HistorySize: 50}, {Prefix: "secret", HistorySize: 5, AllowHistory: &no}}
	})
	for i := 1; i <= 5; i++ {
		ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"feed","event":"tick","data":%d}`, i))
	}
	a := ts.dial("alice", "")
	a.send(map[string]any{"type": "history", "channel": "feed", "limit": 2, "id": "h"})
	h := a.expect("history")
	pubs := h["publications"].([]any)
	if h["id"] != "h" || num(h["offset"]) != 5 || len(pubs) != 2 {
		t.Fatalf("history %v", h)
	}
	if p := pubs[0].(map[string]any); num(p["offset"]) != 4 || p["data"] != float64(4) || p["event"] != "tick" {
		t.Fatalf("newest two, oldest first: %v", pubs)
	}
	a.send(map[string]any{"type": "history", "channel": "feed", "since": map[string]any{"offset": 3, "epoch": h["epoch"]}})
	h = a.expect("history")
	if pubs := h["publications"].([]any); len(pubs) != 2 || num(pubs[0].(map[string]any)["offset"]) != 4 {
		t.Fatalf("since 3: %v", h)
	}
	a.send(map[string]any{"type": "history", "channel": "secret"})
	a.expectError("forbidden")
	a.send(map[string]any{"type": "subscribe", "channel": "secret", "since": map[string]any{"offset": 1, "epoch": "x"}})
	a.expectError("forbidden")
	a.send(map[string]any{"type": "history", "channel": "org:5"})
	a.expectError("forbidden")
	a.send(map[string]any{"type": "subscribe", "channel": "feed", "since": map[string]any{"offset": 1}})
	a.expectError("bad_request")

	status, body := ts.api("GET", "/api/history?channel=feed&since=2&limit=2", testAPIKey, "")
	if pubs, _ := body["publications"].([]any); status != 200 || len(pubs) != 2 || num(pubs[0].(map[string]any)["offset"]) != 3 {
		t.Fatalf("api history: %d %v", status, body)
	}
	status, body = ts.api("GET", "/api/history?channel=feed", testAPIKey, "")
	if pubs, _ := body["publications"].([]any); status != 200 || len(pubs) != 5 {
		t.Fatalf("api history all: %d %v", status, body)
	}
	for _, q := range []string{"channel=bad%20name", "channel=feed&since=yesterday", "channel=feed&limit=-1", ""} {
		if status, _ := ts.api("GET", "/api/history?"+q, testAPIKey, ""); status != 400 {
			t.Errorf("%s: status %d", q, status)
		}
	}
}

// TestPresenceLargerThanTheQueue: a presence list larger than
// --client-queue-bytes reaches the asker whole, as a burst; it used to close
// the asker as a slow consumer (4008).
func TestPresenceLargerThanTheQueue(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		yes := true
		c.ClientQueueBytes = 2048
		c.Namespaces = []config.Namespace{{Prefix: "room", Presence: &yes}}
	})
	const n = 40 // about 90 bytes each: 3.6 KB of list
	for i := range n {
		ts.dial(fmt.Sprintf("member-%02d", i), "").subscribe("room:big")
	}
	a := ts.dial("asker", "")
	a.send(map[string]any{"type": "presence", "channel": "room:big"})
	p := a.expect("presence")
	if clients, _ := p["clients"].([]any); len(clients) != n || p["numClients"] != float64(n) || p["truncated"] != nil {
		t.Fatalf("presence: %d clients listed, numClients %v, truncated %v", len(clients), p["numClients"], p["truncated"])
	}
	a.sync()
}

func TestPresenceAndJoinLeave(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		yes := true
		c.Namespaces = []config.Namespace{{Prefix: "room", Presence: &yes, JoinLeave: true}}
	})
	a1 := ts.dial("ann", "")
	a1.subscribe("room:1")
	a2 := ts.dial("ann", "")
	a2.subscribe("room:1")
	if m := a1.expect("join"); m["channel"] != "room:1" || m["user"].(map[string]any)["userId"] != "ann" {
		t.Fatalf("join %v", m)
	}
	b := ts.dial("ben", "")
	b.subscribe("room:1")
	a1.expect("join")
	a2.expect("join")

	b.send(map[string]any{"type": "presence", "channel": "room:1", "id": 5})
	p := b.expect("presence")
	if p["id"] != float64(5) || p["numClients"] != float64(3) || p["numUsers"] != float64(2) || len(p["clients"].([]any)) != 3 {
		t.Fatalf("presence %v", p)
	}
	c0 := p["clients"].([]any)[0].(map[string]any)
	if c0["clientId"] == "" || c0["userId"] == "" || c0["connectedAt"] == "" {
		t.Fatalf("presence entry %v", c0)
	}
	status, body := ts.api("GET", "/api/presence?channel=room:1", testAPIKey, "")
	if status != 200 || body["numClients"] != float64(3) || body["numUsers"] != float64(2) {
		t.Fatalf("api presence %d %v", status, body)
	}

	// Leaving by unsubscribe and by disconnect both announce.
	b.send(map[string]any{"type": "unsubscribe", "channel": "room:1"})
	b.expect("unsubscribed")
	if m := a1.expect("leave"); m["user"].(map[string]any)["userId"] != "ben" {
		t.Fatalf("leave %v", m)
	}
	a2.expect("leave")
	a2.conn.Close()
	if m := a1.expect("leave"); m["user"].(map[string]any)["clientId"] != a2.Connected["clientId"] {
		t.Fatalf("leave %v", m)
	}
	// Presence is off by default outside org rooms and opted-in namespaces.
	a1.send(map[string]any{"type": "presence", "channel": "chat"})
	a1.expectError("forbidden")
	// /api/stats and websocket.stats keep working.
	if status, body := ts.api("GET", "/api/stats", testAPIKey, ""); status != 200 || body["clients"] != float64(2) {
		t.Fatalf("stats %d %v", status, body)
	}
	if _, body := ts.api("POST", "/call", testAPIKey, `{"key":"websocket.stats"}`); body["ok"] != true {
		t.Fatalf("websocket.stats %v", body)
	}
}

func TestEventFilter(t *testing.T) {
	ts := start(t, nil)
	all := ts.dial("all", "42")
	all.subscribe("org:42")
	some := ts.dial("some", "42")
	some.send(map[string]any{"type": "subscribe", "channel": "org:42", "events": []string{"message", "metrics"}})
	some.expect("subscribed")
	for _, ev := range []string{"message", "sentiment", "metrics", ""} {
		body := `{"channel":"org:42","data":"` + ev + `"`
		if ev != "" {
			body += `,"event":"` + ev + `"`
		}
		ts.api("POST", "/api/publish", testAPIKey, body+"}")
	}
	for _, want := range []string{"message", "sentiment", "metrics", ""} {
		m := all.expect("message")
		if m["data"] != want || (want != "" && m["event"] != want) || (want == "" && m["event"] != nil) {
			t.Fatalf("all got %v, want %q", m, want)
		}
	}
	for _, want := range []string{"message", "metrics"} {
		if m := some.expect("message"); m["event"] != want {
			t.Fatalf("filtered got %v, want %q", m, want)
		}
	}
	some.sync()
	// A client's message may carry an event too.
	all.send(map[string]any{"type": "message", "channel": "org:42", "event": "metrics", "data": 1})
	if m := some.expect("message"); m["event"] != "metrics" || m["from"] != "all" {
		t.Fatalf("got %v", m)
	}
	all.send(map[string]any{"type": "subscribe", "channel": "org:42", "events": []string{"bad event"}})
	all.expectError("bad_request")
}

func TestIdempotencyKey(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "3")
	a.subscribe("org:3")
	body := `{"channel":"org:3","data":{"n":1},"idempotencyKey":"order-17"}`
	status, first := ts.api("POST", "/api/publish", testAPIKey, body)
	if status != 200 || first["duplicate"] != nil {
		t.Fatalf("first %d %v", status, first)
	}
	status, again := ts.api("POST", "/api/publish", testAPIKey, body)
	if status != 200 || again["duplicate"] != true || again["offset"] != first["offset"] || again["delivered"] != float64(0) {
		t.Fatalf("retry %d %v", status, again)
	}
	a.expect("message")
	a.sync() // delivered once
	// Over WebSocket too.
	p := ts.dial("pub", "3")
	for i := 0; i < 2; i++ {
		p.send(map[string]any{"type": "message", "channel": "org:3", "data": 2, "idempotencyKey": "ws-1", "id": i})
		ack := p.expect("published")
		if (i == 1) != (ack["duplicate"] == true) {
			t.Fatalf("ack %d: %v", i, ack)
		}
	}
	a.expect("message")
	a.sync()
}

// TestSlowConsumerRecovers: a subscriber cut off as slow reconnects with its
// last offset and gets everything it missed while history lasts.
func TestSlowConsumerRecovers(t *testing.T) {
	ts := start(t, func(c *config.Config) {
		c.ClientQueueBytes = 64 << 10
		c.Namespaces = []config.Namespace{{Prefix: "feed", HistorySize: 5000}}
	})
	slow := ts.dial("slow", "")
	ack := slow.subscribeSince("feed", map[string]any{"offset": 0, "epoch": "-"}, nil)
	epoch := ack["epoch"].(string)
	big := `"` + fmt.Sprintf("%08000d", 0) + `"`
	n := 0
	for ; n < 3000 && ts.srv.Hub().NumClients() == 1; n++ {
		ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"feed","data":{"seq":%d,"pad":%s}}`, n+1, big))
	}
	if ts.srv.Hub().NumClients() != 0 {
		t.Fatal("slow client not cut off")
	}
	// It read nothing; read what reached it, then recover from the last offset seen.
	var last uint64
	for {
		_ = slow.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, b, err := slow.conn.ReadMessage()
		if err != nil {
			break
		}
		var m map[string]any
		if jsonUnmarshal(b, &m) == nil && m["type"] == "message" {
			last = num(m["offset"])
		}
	}
	r := ts.dial("slow", "")
	ack = r.subscribeSince("feed", map[string]any{"offset": last, "epoch": epoch}, nil)
	if ack["recovered"] != true || num(ack["offset"]) != uint64(n) {
		t.Fatalf("ack %v after %d publications, last seen %d", ack, n, last)
	}
	for want := last + 1; want <= uint64(n); want++ {
		m, err := r.readWithin(5 * time.Second)
		if err != nil {
			t.Fatalf("replay at %d: %v", want, err)
		}
		if num(m["offset"]) != want {
			t.Fatalf("replay got offset %v, want %d", m["offset"], want)
		}
	}
}

// TestRecoverEdgeCases covers the cases Socket.IO's recovery is known to
// lose messages in: a reconnect before any event was ever published, and a
// reconnect after the server closed the connection for missing pongs.
func TestRecoverEdgeCases(t *testing.T) {
	ts := startPinging(t, 50*time.Millisecond, 300*time.Millisecond)
	t.Run("before any event", func(t *testing.T) {
		a := ts.dial("eve", "E")
		ack := a.subscribeSince("org:E", map[string]any{"offset": 0, "epoch": "-"}, nil)
		if num(ack["offset"]) != 0 {
			t.Fatalf("fresh channel ack %v", ack)
		}
		a.conn.Close()
		for i := 1; i <= 3; i++ {
			ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"org:E","data":%d}`, i))
		}
		b := ts.dial("eve", "E")
		ack = b.subscribeSince("org:E", map[string]any{"offset": 0, "epoch": ack["epoch"]}, nil)
		if ack["recovered"] != true {
			t.Fatalf("ack %v", ack)
		}
		for i := 1; i <= 3; i++ {
			if m := b.expect("message"); m["data"] != float64(i) {
				t.Fatalf("got %v", m)
			}
		}
	})
	t.Run("after a ping timeout", func(t *testing.T) {
		a := ts.dial("pat", "P")
		ack := a.subscribeSince("org:P", map[string]any{"offset": 0, "epoch": "-"}, nil)
		epoch := ack["epoch"]
		ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:P","data":"seen"}`)
		seen := num(a.expect("message")["offset"])
		// a stops reading, so it answers no pings: the server closes it.
		eventually(t, 5*time.Second, "silent client closed", func() bool { return ts.srv.Hub().NumClients() == 0 })
		for i := 1; i <= 3; i++ {
			ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"org:P","data":%d}`, i))
		}
		b := ts.dial("pat", "P")
		ack = b.subscribeSince("org:P", map[string]any{"offset": seen, "epoch": epoch}, nil)
		if ack["recovered"] != true {
			t.Fatalf("ack %v", ack)
		}
		for i := 1; i <= 3; i++ {
			if m := b.expect("message"); m["data"] != float64(i) {
				t.Fatalf("got %v", m)
			}
		}
	})
}

// TestPresenceTimestamps: connectedAt in a presence list, from the command
// and from the API, is written like every herald timestamp: RFC 3339 in UTC
// with milliseconds.
func TestPresenceTimestamps(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "42")
	a.subscribe("org:42")
	want := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	if at, _ := a.Connected["timestamp"].(string); !want.MatchString(at) {
		t.Fatalf("connected timestamp %q", at)
	}
	a.send(map[string]any{"type": "presence", "channel": "org:42"})
	p := a.expect("presence")
	if at := p["clients"].([]any)[0].(map[string]any)["connectedAt"].(string); !want.MatchString(at) {
		t.Errorf("presence command: connectedAt %q, want like 2026-11-22T08:00:00.000Z", at)
	}
	_, body := ts.api("GET", "/api/presence?channel=org:42", testAPIKey, "")
	if at := body["clients"].([]any)[0].(map[string]any)["connectedAt"].(string); !want.MatchString(at) {
		t.Errorf("/api/presence: connectedAt %q, want like 2026-11-22T08:00:00.000Z", at)
	}
}

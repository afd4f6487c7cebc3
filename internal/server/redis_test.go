package server_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/redistest"
)

// One real redis-server for the package's Redis tests, started by the first
// of them; each test uses its own key prefix.
var shared struct {
	once sync.Once
	srv  *redistest.Server
	err  error
}

func sharedRedis(t *testing.T) *redistest.Server {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = redistest.Start() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Stop()
	}
	os.Exit(code)
}

// startNode runs herald with the Redis broker on rs under prefix and waits
// until its subscription is live (/healthz 200).
func startNode(t *testing.T, rs *redistest.Server, prefix string) *testServer {
	t.Helper()
	ts := start(t, func(c *config.Config) {
		c.Broker, c.RedisURL, c.RedisPrefix = "redis", rs.URL(), prefix
	})
	eventually(t, 5*time.Second, "redis subscription live", func() bool {
		st, _ := ts.api("GET", "/healthz", "", "")
		return st == 200
	})
	return ts
}

// twoNodes starts two nodes on the shared Redis, under a prefix of their own.
func twoNodes(t *testing.T) (*testServer, *testServer) {
	rs := sharedRedis(t)
	prefix := rs.Prefix()
	return startNode(t, rs, prefix), startNode(t, rs, prefix)
}

// Two nodes on one Redis: a publication through either node's API or
// either node's clients reaches the subscribers of both, with one sequence
// of offsets; the API's delivered counts the publishing node's own.
func TestRedisTwoNodesDeliver(t *testing.T) {
	a, b := twoNodes(t)
	alice := a.dial("alice", "42")
	alice.subscribe("org:42")
	bob := b.dial("bob", "42")
	bob.subscribe("org:42")

	st, body := a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":"one"}`)
	if st != 200 || num(body["offset"]) != 1 || num(body["delivered"]) != 1 {
		t.Fatalf("publish on a: %d %v", st, body)
	}
	for _, c := range []*wsClient{alice, bob} {
		if m := c.expect("message"); m["data"] != "one" || num(m["offset"]) != 1 {
			t.Fatalf("delivery: %v", m)
		}
	}
	bob.send(map[string]any{"type": "message", "channel": "org:42", "data": "two", "id": "p1"})
	if m := bob.expect("published"); num(m["offset"]) != 2 {
		t.Fatalf("published ack %v", m)
	}
	if m := alice.expect("message"); m["data"] != "two" || num(m["offset"]) != 2 || m["from"] != "bob" {
		t.Fatalf("alice got %v", m)
	}
	bob.expectNothing(200 * time.Millisecond) // not echoed to its publisher
}

// A subscriber that dropped from one node recovers on the other, from the
// history kept in Redis, then gets live publications from both.
func TestRedisRecoveryAcrossNodes(t *testing.T) {
	a, b := twoNodes(t)
	c := a.dial("alice", "42")
	ack := c.subscribeSince("org:42", map[string]any{"offset": 0, "epoch": "none"}, nil)
	epoch, _ := ack["epoch"].(string)
	a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":0}`)
	last := num(c.expect("message")["offset"])
	c.conn.Close()
	for i := 1; i <= 50; i++ {
		if st, body := b.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"org:42","data":%d}`, i)); st != 200 {
			t.Fatalf("publish %d: %d %v", i, st, body)
		}
	}
	c = b.dial("alice", "42")
	ack = c.subscribeSince("org:42", map[string]any{"offset": last, "epoch": epoch}, nil)
	if ack["recovered"] != true || num(ack["offset"]) != 51 || ack["epoch"] != epoch {
		t.Fatalf("recovery ack %v", ack)
	}
	for i := 1; i <= 50; i++ {
		if m := c.expect("message"); m["data"] != float64(i) || num(m["offset"]) != uint64(i+1) {
			t.Fatalf("replay %d: %v", i, m)
		}
	}
	a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":"live"}`)
	if m := c.expect("message"); m["data"] != "live" || num(m["offset"]) != 52 {
		t.Fatalf("live: %v", m)
	}
}

// Losing the pub/sub connection loses what was published meanwhile: the
// node closes its subscribers with 4010 so they recover, counts and logs
// it, and works again once resubscribed.
func TestRedisSubscriptionLossCloses4010(t *testing.T) {
	rs := sharedRedis(t)
	prefix := rs.Prefix()
	a := startNode(t, rs, prefix)
	c := a.dial("alice", "42")
	c.subscribe("org:42")
	rc := rs.Client()
	defer rc.Close()
	if err := rc.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	if code := c.expectClose(5 * time.Second); code != 4010 {
		t.Fatalf("close code %d, want 4010", code)
	}
	eventually(t, 5*time.Second, "resubscribed", func() bool {
		st, _ := a.api("GET", "/healthz", "", "")
		return st == 200
	})
	if !containsLine(a.metricsText(), "herald_broker_gaps_total 1") {
		t.Error("gap not counted")
	}
	c = a.dial("alice", "42")
	c.subscribe("org:42")
	a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":"after"}`)
	if m := c.expect("message"); m["data"] != "after" {
		t.Fatalf("after resubscribing: %v", m)
	}
}

// With Redis down, every operation that needs it gets a defined answer at
// once: /healthz 503, API 503 "unavailable", an "unavailable" error frame;
// connected subscribers are closed with 4010, and the metrics say so.
func TestRedisDown(t *testing.T) {
	rs, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	a := startNode(t, rs, "down")
	c := a.dial("alice", "42")
	c.subscribe("org:42")
	idle := a.dial("bob", "42")
	kicked := a.dial("carl", "42")
	rs.Stop()
	if code := c.expectClose(5 * time.Second); code != 4010 {
		t.Fatalf("close code %d, want 4010", code)
	}
	st, body := a.api("GET", "/healthz", "", "")
	if st != 503 || body["status"] != "broker_unavailable" {
		t.Fatalf("healthz: %d %v", st, body)
	}
	st, body = a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":1}`)
	if st != 503 || body["error"] != "unavailable" {
		t.Fatalf("publish: %d %v", st, body)
	}
	idle.send(map[string]any{"type": "subscribe", "channel": "org:42", "id": "s"})
	if m := idle.expectError("unavailable"); m["channel"] != "org:42" || m["id"] != "s" {
		t.Fatalf("error frame %v", m)
	}
	idle.send(map[string]any{"type": "history", "channel": "org:42"})
	idle.expectError("unavailable")
	m := a.metricsText()
	for _, line := range []string{"herald_broker_up 0", `herald_broker_unavailable_total{op="publish"} 1`, `herald_broker_unavailable_total{op="subscribe"} 1`, `herald_broker_unavailable_total{op="history"} 1`} {
		if !containsLine(m, line) {
			t.Errorf("metrics lack %q", line)
		}
	}
	idle.sync() // still connected: the broker being down closes no one who was not subscribed
	// A disconnect still cuts this node's connections; the answer says the
	// other nodes were not told.
	st, body = a.api("POST", "/api/disconnect", testAPIKey, `{"userId":"carl"}`)
	if msg, _ := body["message"].(string); st != 503 || !strings.HasPrefix(msg, "disconnected 1 connection(s) on this node; the other nodes were not told") {
		t.Fatalf("disconnect: %d %v", st, body)
	}
	if code := kicked.expectClose(5 * time.Second); code != 4000 {
		t.Fatalf("close code %d, want 4000", code)
	}
}

// The server API's user sends and disconnects reach the user's connections
// on every node; delivered counts the node that was asked.
func TestRedisUserSendAndDisconnectAcrossNodes(t *testing.T) {
	a, b := twoNodes(t)
	onA, onB := a.dial("carol", "7"), b.dial("carol", "7")
	other := b.dial("dave", "7")
	st, body := a.api("POST", "/api/send", testAPIKey, `{"userId":"carol","channel":"user:carol","data":{"n":1}}`)
	if st != 200 || num(body["delivered"]) != 1 {
		t.Fatalf("send: %d %v", st, body)
	}
	for _, c := range []*wsClient{onA, onB} {
		m := c.expect("message")
		if d, _ := m["data"].(map[string]any); m["channel"] != "user:carol" || d["n"] != float64(1) || m["ts"] == "" {
			t.Fatalf("user message %v", m)
		}
	}
	// Seed 000's /call handler goes the same way.
	st, body = b.api("POST", "/call", testAPIKey, `{"key":"websocket.send","params":{"userId":"carol","channel":"user:carol","data":2}}`)
	if st != 200 || body["ok"] != true {
		t.Fatalf("/call send: %d %v", st, body)
	}
	for _, c := range []*wsClient{onA, onB} {
		if m := c.expect("message"); m["data"] != float64(2) {
			t.Fatalf("user message %v", m)
		}
	}
	st, body = b.api("POST", "/api/disconnect", testAPIKey, `{"userId":"carol"}`)
	if st != 200 || num(body["disconnected"]) != 1 {
		t.Fatalf("disconnect: %d %v", st, body)
	}
	for _, c := range []*wsClient{onA, onB} {
		if code := c.expectClose(5 * time.Second); code != 4000 {
			t.Fatalf("close code %d, want 4000", code)
		}
	}
	id, _ := other.Connected["clientId"].(string)
	st, _ = a.api("POST", "/api/disconnect", testAPIKey, fmt.Sprintf(`{"clientId":%q}`, id))
	if st != 200 {
		t.Fatalf("disconnect client: %d", st)
	}
	if code := other.expectClose(5 * time.Second); code != 4000 {
		t.Fatalf("close code %d, want 4000", code)
	}
}

// End to end on two nodes: a publish to channel "org:1:b" with
// idempotencyKey "c" after a publish to "org:1" with key "b:c" is a
// publication of its own, and org:1:b's subscriber gets it.
func TestRedisIdempotencyKeysPerChannel(t *testing.T) {
	a, b := twoNodes(t)
	bob := b.dial("bob", "1")
	bob.subscribe("org:1:b")
	if st, body := a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:1","data":"x","idempotencyKey":"b:c"}`); st != 200 || body["duplicate"] == true {
		t.Fatalf("publish to org:1: %d %v", st, body)
	}
	st, body := a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:1:b","data":"y","idempotencyKey":"c"}`)
	if st != 200 || body["duplicate"] == true || num(body["offset"]) != 1 {
		t.Fatalf("first publish to org:1:b with a fresh key: %d %v", st, body)
	}
	if m := bob.expect("message"); m["data"] != "y" {
		t.Fatalf("bob got %v", m)
	}
}

// A broadcast that fails on a later channel (here Redis refuses org:43:
// its key has the wrong type, as out of memory would) has published the
// earlier ones: the answer says which, not "nothing was done".
func TestRedisBroadcastPartlyDone(t *testing.T) {
	rs := sharedRedis(t)
	prefix := rs.Prefix()
	a := startNode(t, rs, prefix)
	alice := a.dial("alice", "42")
	alice.subscribe("org:42")
	rc := rs.Client()
	defer rc.Close()
	if err := rc.Set(context.Background(), prefix+":m:org:43", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	st, body := a.api("POST", "/api/broadcast", testAPIKey, `{"channels":["org:42","org:43","org:44"],"data":"once"}`)
	m, err := alice.readWithin(2 * time.Second)
	if err != nil || m["data"] != "once" {
		t.Fatalf("org:42 was not published: %v %v (answer %d %v)", m, err, st, body)
	}
	msg, _ := body["message"].(string)
	if st != 503 || body["error"] != "unavailable" || strings.Contains(msg, "nothing was done") ||
		!strings.Contains(msg, `published to the first 1 channels listed (up to "org:42")`) || !strings.Contains(msg, `"org:43" and the channels after it were not published`) {
		t.Errorf("broadcast published org:42 (delivered to alice) but answered %d %v", st, body)
	}
}

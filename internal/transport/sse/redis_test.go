package sse_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/redistest"
	"github.com/herald-rt/herald/internal/server/servertest"
)

// redisNode starts a node on the Redis at url under prefix and waits until
// its subscription is live.
func redisNode(t *testing.T, url, prefix string) *servertest.Server {
	t.Helper()
	srv := servertest.Start(t, func(c *config.Config) { c.Broker, c.RedisURL, c.RedisPrefix = "redis", url, prefix })
	deadline := time.Now().Add(30 * time.Second) // a failure bound
	for {
		resp, err := http.Get("http://" + srv.Addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return srv
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the node's Redis subscription never went live")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStreamAcrossNodesOnRedis: two nodes on one Redis. A stream on node A
// receives what is published through node B, and its last event id
// resumes on node B, recovering what was published while no stream was
// open: the id is all the state, and any node recovers it. A node that
// loses its Redis subscription ends its streams with 4010.
func TestStreamAcrossNodesOnRedis(t *testing.T) {
	rs, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Stop()
	prefix := rs.Prefix()
	a, b := redisNode(t, rs.URL(), prefix), redisNode(t, rs.URL(), prefix)
	tok := token(t, "olga", "42")
	chans := []string{"org:42:x", "org:42:y"}

	s := stream(t, a, tok, "", chans...)
	s.upTo(func(ev event) bool { return ev.Name == "herald/subscribed" && ev.Data["channel"] == chans[1] })
	want := map[string][]uint64{}
	for i := range 4 {
		ch := chans[i%2]
		want[ch] = append(want[ch], publish(t, b, ch, i))
	}
	got := s.upTo(func(ev event) bool { return ev.Name == "message" && ev.Data["data"] == float64(3) })
	last := got[len(got)-1].ID
	s.resp.Body.Close()

	for i := 4; i < 8; i++ {
		ch := chans[i%2]
		want[ch] = append(want[ch], publish(t, a, ch, i))
	}
	r := stream(t, b, tok, last, chans...)
	after := r.upTo(func(ev event) bool { return ev.Name == "message" && ev.Data["data"] == float64(7) })
	for _, ev := range after {
		if ev.Name == "herald/subscribed" && ev.Data["recovered"] != true {
			t.Fatalf("resume on the other node: %+v", ev)
		}
	}
	for _, ch := range chans {
		var offs []uint64
		for _, ev := range append(got, after...) {
			if ev.Name == "message" && ev.Data["channel"] == ch {
				offs = append(offs, num(ev.Data["offset"]))
			}
		}
		if len(offs) != len(want[ch]) {
			t.Fatalf("%s: offsets %v, want %v", ch, offs, want[ch])
		}
		for i := range offs {
			if offs[i] != want[ch][i] {
				t.Fatalf("%s: offsets %v, want %v", ch, offs, want[ch])
			}
		}
	}

	// Node B loses its pub/sub connection: what it might have missed is a
	// gap, so its streams end with herald/close 4010 (and reconnect).
	rc := rs.Client()
	defer rc.Close()
	if err := rc.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	closed := r.upTo(func(ev event) bool { return ev.Name == "herald/close" })
	if code := num(closed[len(closed)-1].Data["code"]); code != protocol.CloseResubscribe {
		t.Fatalf("close code %d, want 4010", code)
	}
}

// A resumed stream one of whose channels the broker refuses for now
// (unavailable) while another recovers: the stream sends the error, then
// closes with 4010, and the ids it sent meanwhile (the recovered channel's
// replay) still carry the refused channel's claimed position, so the
// reconnect with the last of them recovers both channels, nothing lost.
// Node B's Redis user may not touch one channel's keys, so its subscribe
// there fails as a Redis outage would, and only there.
func TestStreamResumeRefusedForNowKeepsItsClaim(t *testing.T) {
	rs, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Stop()
	prefix := rs.Prefix()
	x, y := "org:42:x", "org:42:y"
	rc := rs.Client()
	defer rc.Close()
	if err := rc.Do(context.Background(), "ACL", "SETUSER", "nodeb", "on", ">pw", "resetkeys",
		"~"+prefix+":instance", "~"+prefix+":?:"+x, "~"+prefix+":i:*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	a := redisNode(t, rs.URL(), prefix)
	b := redisNode(t, "unix://nodeb:pw@"+rs.Socket, prefix)
	tok := token(t, "olga", "42")

	s := stream(t, a, tok, "", y, x)
	s.upTo(func(ev event) bool { return ev.Name == "herald/subscribed" && ev.Data["channel"] == x })
	publish(t, a, y, "y1")
	publish(t, a, x, "x1")
	last := s.upTo(func(ev event) bool { return ev.Name == "message" && ev.Data["data"] == "x1" })
	s.resp.Body.Close()
	publish(t, a, y, "y2")
	publish(t, a, x, "x2")

	r := stream(t, b, tok, last[len(last)-1].ID, y, x)
	evs := r.upTo(func(ev event) bool { return ev.Name == "herald/close" })
	var refused, replayed bool
	for _, ev := range evs {
		switch {
		case ev.Name == "herald/error" && ev.Data["channel"] == y:
			refused = ev.Data["code"] == string(protocol.CodeUnavailable)
		case ev.Name == "herald/subscribed" && ev.Data["channel"] == y:
			t.Fatalf("%s subscribed on a node that may not read it: %+v", y, ev)
		case ev.Name == "message":
			replayed = replayed || ev.Data["data"] == "x2"
		}
	}
	if code := num(evs[len(evs)-1].Data["code"]); !refused || !replayed || code != protocol.CloseResubscribe {
		t.Fatalf("resume with %s refused: %+v; want its error, %s's replay, then close 4010", y, evs, x)
	}

	again := stream(t, a, tok, r.lastID, y, x)
	got := again.upTo(func(ev event) bool { return ev.Name == "herald/subscribed" && ev.Data["channel"] == x })
	var msgs []any
	for _, ev := range got {
		if ev.Name == "herald/subscribed" && ev.Data["recovered"] != true {
			t.Fatalf("reconnect after the refusal: %+v, want every channel recovered", ev)
		}
		if ev.Name == "message" {
			msgs = append(msgs, ev.Data["data"])
		}
	}
	if len(msgs) != 1 || msgs[0] != "y2" {
		t.Fatalf("reconnect after the refusal replayed %v, want [y2]", msgs)
	}
}

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
	node := func() *servertest.Server {
		srv := servertest.Start(t, func(c *config.Config) { c.Broker, c.RedisURL, c.RedisPrefix = "redis", rs.URL(), prefix })
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
	a, b := node(), node()
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

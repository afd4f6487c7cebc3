package redisbroker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// Listening: a node listens to the channels its subscribers follow, and sweeps
// forget the others without losing a join.

// A node receives the publications of the channels it has joined, not the
// others': a node with no subscriber on a channel does no work for it, and
// its publishers there get their answer without waiting for an echo.
func TestNodeListensOnlyToItsChannels(t *testing.T) {
	prefix := srv.Prefix()
	var mu sync.Mutex
	got := map[string][]string{}
	on := func(node string) broker.DeliverFunc {
		return func(ch string, p *broker.Publication) int {
			mu.Lock()
			got[node] = append(got[node], fmt.Sprint(ch, p.Offset))
			mu.Unlock()
			return 1
		}
	}
	a := start(t, Options{Prefix: prefix, Deliver: on("a")})
	b := start(t, Options{Prefix: prefix, Deliver: on("b")})
	joinNow(t, a, "x")
	joinNow(t, b, "y")
	if n := numsub(t, prefix+":c:x"); n != 1 {
		t.Fatalf("%d nodes listen to x, want 1", n)
	}
	for _, ch := range []string{"x", "y", "z"} {
		for _, n := range []*Broker{a, b} {
			if _, err := n.Publish(context.Background(), ch, broker.Publication{}, broker.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each listener's own publish waited for its echo; the other node's
	// may still be on its way.
	for deadline := time.Now().Add(5 * time.Second); ; {
		mu.Lock()
		ga, gb := fmt.Sprint(got["a"]), fmt.Sprint(got["b"])
		mu.Unlock()
		if ga == "[x1 x2]" && gb == "[y1 y2]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node a got %s (want [x1 x2]), node b got %s (want [y1 y2])", ga, gb)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r, err := b.Publish(context.Background(), "x", broker.Publication{}, broker.PublishOptions{})
	if err != nil || r.Delivered != 0 || r.Offset != 3 {
		t.Fatalf("publish on a node not listening: %+v %v", r, err)
	}
	r, err = a.Publish(context.Background(), "x", broker.Publication{}, broker.PublishOptions{})
	if err != nil || r.Delivered != 1 || r.Offset != 4 {
		t.Fatalf("publish on the listening node: %+v %v", r, err)
	}
}

// Sweep unsubscribes a node from the channels it forgets, and a later join
// subscribes it again.
func TestSweepUnsubscribes(t *testing.T) {
	prefix := srv.Prefix()
	var delivered atomic.Int64
	b := start(t, Options{Prefix: prefix, Deliver: func(string, *broker.Publication) int { delivered.Add(1); return 1 }})
	joinNow(t, b, "s")
	b.Sweep(time.Hour, nil)
	if n := numsub(t, prefix+":c:s"); n != 1 {
		t.Fatalf("swept a channel joined just now: %d listeners", n)
	}
	b.Sweep(0, func(string) bool { return true })
	if n := numsub(t, prefix+":c:s"); n != 1 {
		t.Fatalf("swept a channel in use: %d listeners", n)
	}
	b.Sweep(0, nil)
	if n := numsub(t, prefix+":c:s"); n != 0 {
		t.Fatalf("%d listeners after the sweep, want 0", n)
	}
	if r, err := b.Publish(context.Background(), "s", broker.Publication{}, broker.PublishOptions{}); err != nil || r.Delivered != 0 {
		t.Fatalf("publish after the sweep: %+v %v", r, err)
	}
	joinNow(t, b, "s")
	if r, err := b.Publish(context.Background(), "s", broker.Publication{}, broker.PublishOptions{}); err != nil || r.Delivered != 1 || r.Offset != 2 {
		t.Fatalf("publish after joining again: %+v %v", r, err)
	}
	time.Sleep(20 * time.Millisecond) // an unsubscribed publication would have come by now
	if n := delivered.Load(); n != 1 {
		t.Fatalf("%d deliveries, want 1 (only the publication after the second join)", n)
	}
}

// Joins racing sweeps that unsubscribe the same channel: every join ends
// listening (the UNSUBSCRIBE of a forgotten state never lands after the
// SUBSCRIBE of a join that made it again), so the publication after each
// join is delivered.
func TestJoinsRaceSweeps(t *testing.T) {
	var subscribed atomic.Bool // the channel's local subscriber, as a hub would hold it
	b := start(t, Options{Prefix: srv.Prefix(), Deliver: func(string, *broker.Publication) int {
		if subscribed.Load() {
			return 1
		}
		return 0
	}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			b.Sweep(0, func(string) bool { return subscribed.Load() })
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	for i := 0; i < 1000; i++ {
		err := b.Subscribe(context.Background(), "race", broker.SubscribeOptions{}, func(broker.Recovery) error { subscribed.Store(true); return nil })
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
		r, err := b.Publish(context.Background(), "race", broker.Publication{}, broker.PublishOptions{})
		if err != nil || r.Delivered != 1 {
			t.Fatalf("join %d: the publication after it: %+v %v", i, r, err)
		}
		subscribed.Store(false)
	}
}

package redisbroker

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// A pub/sub connection that breaks while the receive loop is busy (here:
// blocked handing messages to a slow worker, as when Redis kills a slow
// subscriber for its output buffer), and that a join's SUBSCRIBE finds
// broken first, is reported lost: publications it held are not silently
// gone. (go-redis used to replace it inside the join's call, and the
// receive loop read on from the new one without seeing a loss.)
func TestSilentReconnectByJoin(t *testing.T) {
	prefix := srv.Prefix()
	release := make(chan struct{})
	var first sync.Once
	var mu sync.Mutex
	got := map[uint64]bool{}
	var gaps, losses atomic.Int64
	sub := start(t, Options{Prefix: prefix, Workers: 1, Timeout: 5 * time.Second,
		Deliver: func(ch string, p *broker.Publication) int {
			if ch != "busy" {
				return 0
			}
			first.Do(func() { <-release })
			mu.Lock()
			got[p.Offset] = true
			mu.Unlock()
			return 1
		},
		OnGap: func(string) { gaps.Add(1) },
		OnLive: func(live bool) {
			if !live {
				losses.Add(1)
			}
		}})
	pub := start(t, Options{Prefix: prefix})
	joinNow(t, sub, "busy")
	const n = 1200
	for i := 0; i < n; i++ {
		if _, err := pub.Publish(context.Background(), "busy", broker.Publication{}, broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The worker is stuck in its first Deliver, its queue full: the receive
	// loop is blocked in dispatch, not reading the connection.
	for deadline := time.Now().Add(5 * time.Second); len(sub.queues[0]) < cap(sub.queues[0]); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d", len(sub.queues[0]))
		}
	}
	// Break sub's pub/sub connection (the one with two subscriptions).
	c := srv.Client()
	defer c.Close()
	list, err := c.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " sub=2 ") {
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					if err := c.Do(context.Background(), "client", "kill", "id", id).Err(); err != nil {
						t.Fatal(err)
					}
					killed++
				}
			}
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d connections, want sub's pub/sub connection", killed)
	}
	time.Sleep(100 * time.Millisecond)
	joined := make(chan error, 1)
	go func() {
		joined <- sub.Subscribe(context.Background(), "other", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil })
	}()
	time.Sleep(300 * time.Millisecond)
	close(release)
	if err := <-joined; err != nil {
		t.Logf("join on other: %v", err)
	}
	time.Sleep(time.Second)
	mu.Lock()
	missed := 0
	for off := uint64(1); off <= n; off++ {
		if !got[off] {
			missed++
		}
	}
	mu.Unlock()
	if missed > 0 && gaps.Load() == 0 && losses.Load() == 0 {
		t.Fatalf("%d of %d publications of busy never delivered, yet no gap and no loss was reported", missed, n)
	}
	t.Logf("missed %d, gaps %d, losses %d", missed, gaps.Load(), losses.Load())
}

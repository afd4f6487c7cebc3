package redisbroker

import (
	"context"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// A subscription lost to an unanswered ping (Redis busy or paused for
// ~10 s, the connection itself intact) resets every channel to "asked", but
// go-redis keeps the same connection, so no new confirmation of the
// channel's subscription ever comes: every later join on a channel the node
// listened to fails, for as long as clients keep trying (each failed join
// touches the channel, so Sweep never drops it).
func TestAuditJoinAfterPingTimeoutLoss(t *testing.T) {
	prefix := srv.Prefix()
	var lost, back = make(chan struct{}, 1), make(chan struct{}, 1)
	b := start(t, Options{Prefix: prefix, Timeout: 2 * time.Second,
		Deliver: func(string, *broker.Publication) int { return 1 },
		OnLive: func(live bool) {
			ch := back
			if !live {
				ch = lost
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}})
	select {
	case <-back: // the first time live, in start
	default:
	}
	joinNow(t, b, "p")
	c := srv.Client()
	defer c.Close()
	// 5 s of silence, then a ping unanswered for 5 s more.
	if err := c.Do(context.Background(), "client", "pause", "11500", "all").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(14 * time.Second):
		t.Fatal("subscription not lost while Redis was paused")
	}
	select {
	case <-back:
	case <-time.After(10 * time.Second):
		t.Fatal("subscription not live again")
	}
	if !b.Live() {
		t.Fatal("told live, but not live")
	}
	if n := numsub(t, prefix+":c:p"); n != 1 {
		t.Fatalf("%d listeners of p in Redis", n)
	}
	for i := 0; i < 3; i++ {
		err := b.Subscribe("p", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil })
		if err == nil {
			return
		}
		t.Logf("join %d after the loss: %v", i, err)
	}
	t.Fatal("every join on p fails after the ping-timeout loss (the node is subscribed in Redis, but never sees a new confirmation)")
}

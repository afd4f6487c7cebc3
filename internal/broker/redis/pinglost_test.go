package redisbroker

import (
	"context"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// A subscription lost to an unanswered ping (Redis busy or paused, the
// connection itself intact) is a loss like any other: the node takes a new
// connection and subscribes it to the channels it listened to, and joins
// there work again. (go-redis keeps a connection after a read timeout; the
// channels used to wait for a confirmation that never came on it, and every
// later join on them failed.)
func TestJoinAfterPingTimeoutLoss(t *testing.T) {
	prefix := srv.Prefix()
	var lost, back = make(chan struct{}, 1), make(chan struct{}, 1)
	b := start(t, Options{Prefix: prefix, Timeout: 2 * time.Second, pingEvery: 300 * time.Millisecond,
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
	// 300 ms of silence, then a ping unanswered for 300 ms more.
	if err := c.Do(context.Background(), "client", "pause", "1000", "all").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
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
		err := b.Subscribe(context.Background(), "p", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil })
		if err == nil {
			return
		}
		t.Logf("join %d after the loss: %v", i, err)
	}
	t.Fatal("every join on p fails after the ping-timeout loss")
}

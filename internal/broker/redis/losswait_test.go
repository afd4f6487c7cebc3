package redisbroker

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
)

// A publish whose script answer comes back after the node lost (and
// re-established) its subscription does not wait for an echo that came
// through the old subscription or never will: it answers at once, with
// Delivered 0.
func TestPublishAcrossSubscriptionLossAnswersAtOnce(t *testing.T) {
	p := newSlowProxy(t, srv.Socket, 300*time.Millisecond)
	cOpts := &redis.Options{Network: "unix", Addr: p.ln.Addr().String()}
	b := start(t, Options{Redis: cOpts, Prefix: srv.Prefix(), Timeout: 2 * time.Second,
		Deliver: func(string, *broker.Publication) int { return 1 }})
	if _, err := b.Publish(context.Background(), "w", broker.Publication{}, broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	// The pub/sub connection was made first (by Run); only the command
	// connection made by the publish above gets slow replies.
	p.fast.Store(1)
	p.slow.Store(p.count.Load() + 1)
	done := make(chan time.Duration, 1)
	var res broker.PublishResult
	go func() {
		t0 := time.Now()
		res, _ = b.Publish(context.Background(), "w", broker.Publication{}, broker.PublishOptions{})
		done <- time.Since(t0)
	}()
	time.Sleep(100 * time.Millisecond)
	k := srv.Client()
	defer k.Close()
	if err := k.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	d := <-done
	if d > time.Second {
		t.Fatalf("publish took %v (Timeout 2s) after the subscription was lost and back; result %+v", d, res)
	}
}

package redisbroker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/redistest"
)

// Unavailability and bounds: a call on a Redis that is gone, slow or no longer
// wanted ends in time and says what was done.

// With Redis gone, Publish, Subscribe and History fail at once with
// ErrUnavailable instead of hanging.
func TestRedisDownIsUnavailable(t *testing.T) {
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, Options{Redis: own.Options(), Timeout: 10 * time.Second})
	own.Stop()
	for deadline := time.Now().Add(5 * time.Second); b.Live(); {
		if time.Now().After(deadline) {
			t.Fatal("still live 5s after Redis stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t0 := time.Now()
	if _, err := b.Publish(context.Background(), "d", broker.Publication{}, broker.PublishOptions{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("publish: %v", err)
	}
	if err := b.Subscribe(context.Background(), "d", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("subscribe: %v", err)
	}
	if _, _, err := b.History(context.Background(), "d", broker.HistoryQuery{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("history: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second { // waiting would be 10 s a call: a failure bound, not a measure
		t.Fatalf("calls took %v with Redis down", d)
	}
}

// Options.Timeout bounds one Redis call: the broker's pool honours context
// deadlines (go-redis ignores them unless ContextTimeoutEnabled, and would
// wait for its ReadTimeout, 3s by default).
func TestTimeoutBoundsRedisCalls(t *testing.T) {
	prefix := srv.Prefix()
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	clOpts := opts
	b := start(t, Options{Redis: clOpts, Prefix: prefix, Timeout: 50 * time.Millisecond})
	ho := slowPublish(t, prefix, "slowcall", 500000)
	t0 := time.Now()
	_, err = b.Publish(context.Background(), "slowcall", broker.Publication{}, ho)
	// The script runs for seconds: a publish that waited for it would
	// succeed. 2 s, under go-redis's 3 s ReadTimeout, is a failure bound for
	// a loaded machine, not a measure.
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("publish with Timeout 50ms: %v, want it cut off (unavailable)", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("publish with Timeout 50ms took %v (err %v)", d, err)
	}
}

// The caller's context reaches Redis: a call whose context is already done
// ends with ErrUnavailable and does nothing.
func TestCallerContextEndsTheCall(t *testing.T) {
	b := start(t, Options{Prefix: srv.Prefix()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Publish(ctx, "c", broker.Publication{Data: []byte(`1`)}, broker.PublishOptions{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish with a done context: %v, want ErrUnavailable", err)
	}
	if _, _, err := b.History(ctx, "c", broker.HistoryQuery{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("History with a done context: %v, want ErrUnavailable", err)
	}
	if err := b.Notify(ctx, 'u', "x"); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Notify with a done context: %v, want ErrUnavailable", err)
	}
	joined := false
	if err := b.Subscribe(ctx, "c", broker.SubscribeOptions{}, func(broker.Recovery) error { joined = true; return nil }); !errors.Is(err, broker.ErrUnavailable) || joined {
		t.Errorf("Subscribe with a done context: %v (joined %v), want ErrUnavailable", err, joined)
	}
	_, pos, err := b.History(context.Background(), "c", broker.HistoryQuery{})
	if err != nil || pos.Offset != 0 {
		t.Errorf("after the calls: offset %d, %v; want nothing published", pos.Offset, err)
	}
}

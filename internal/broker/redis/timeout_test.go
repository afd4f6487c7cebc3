package redisbroker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
)

// slowPublish gives channel ch a history of n entries to trim, so that the
// next publish with history size 10 keeps Redis busy for a while (as a
// lowered history_size, a busy Redis or a slow network do).
func slowPublish(t *testing.T, b *Broker, prefix, ch string, n int) broker.PublishOptions {
	t.Helper()
	ho := broker.PublishOptions{History: broker.HistoryOptions{Size: 10}}
	if _, err := b.Publish(context.Background(), ch, broker.Publication{}, ho); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	entries := make([]any, 10000)
	for i := range entries {
		entries[i] = "1000000:1:0:0:"
	}
	for i := 0; i < n/len(entries); i++ {
		if err := c.LPush(context.Background(), prefix+":h:"+ch, entries...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return ho
}

// A publish whose answer does not come in time (here: read_timeout=100ms,
// as --redis-url "...?read_timeout=100ms" makes it) may still have been
// carried out: Redis runs a script it has started to the end. The error says
// so (ErrOutcomeUnknown, besides ErrUnavailable), and indeed the publication
// is stored: "nothing was done, retry" would have published it twice.
func TestPublishTimeoutOutcomeUnknown(t *testing.T) {
	prefix := srv.Prefix()
	opts, err := redis.ParseURL(srv.URL() + "?read_timeout=100ms")
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, Options{Redis: opts, Prefix: prefix})
	ho := slowPublish(t, b, prefix, "slow", 500000)
	_, err = b.Publish(context.Background(), "slow", broker.Publication{Data: []byte(`"once"`)}, ho)
	if !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, broker.ErrOutcomeUnknown) {
		t.Fatalf("publish with a slow script: %v, want ErrUnavailable and ErrOutcomeUnknown", err)
	}
	var items []broker.Publication
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) { // a failure bound: the script runs for seconds on a loaded machine
		if items, _, err = b.History(context.Background(), "slow", broker.HistoryQuery{}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	stored := false
	for _, p := range items {
		stored = stored || string(p.Data) == `"once"`
	}
	if !stored {
		t.Fatal("the slow publication is not in history: this test no longer shows an uncertain outcome")
	}
	// A publish Redis never got is certain: nothing was done.
	dead := &redis.Options{Network: "unix", Addr: t.TempDir() + "/none.sock"}
	nb := New(Options{Redis: dead, Prefix: prefix})
	nb.live.Store(true) // as if the subscription were live, to reach the call
	if _, err := nb.Publish(context.Background(), "x", broker.Publication{}, broker.PublishOptions{}); !errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrOutcomeUnknown) {
		t.Fatalf("publish to a Redis that is not there: %v, want ErrUnavailable only", err)
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
	ho := slowPublish(t, b, prefix, "slowcall", 500000)
	t0 := time.Now()
	_, err = b.Publish(context.Background(), "slowcall", broker.Publication{}, ho)
	if d := time.Since(t0); d > 250*time.Millisecond {
		t.Fatalf("publish with Timeout 50ms took %v (err %v)", d, err)
	}
}

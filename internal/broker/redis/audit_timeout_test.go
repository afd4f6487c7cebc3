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
	if _, err := b.Publish(ch, broker.Publication{}, ho); err != nil {
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

// ErrUnavailable (and the "unavailable" error, docs/protocol.md: "nothing
// was done (no subscription, no publication); try again"; unavailableMsg in
// server/broker.go: "nothing was done, retry") is returned when the publish
// script's call fails with a timeout (redis.go:238-239), but Redis runs a
// script it has started to the end: the publication is stored and
// delivered to every node, and a client that follows the advice publishes
// it twice. The client here has read_timeout=100ms, as --redis-url
// "...?read_timeout=100ms" makes it; the default 3s does the same for a
// slower Redis.
func TestAuditPublishTimeoutStillPublishes(t *testing.T) {
	prefix := srv.Prefix()
	opts, err := redis.ParseURL(srv.URL() + "?read_timeout=100ms")
	if err != nil {
		t.Fatal(err)
	}
	cl := redis.NewClient(opts)
	defer cl.Close()
	b := start(t, Options{Client: cl, Prefix: prefix})
	ho := slowPublish(t, b, prefix, "slow", 500000)
	if _, err := b.Publish("slow", broker.Publication{Data: []byte(`"once"`)}, ho); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("publish with a slow script: %v, want ErrUnavailable", err)
	}
	var items []broker.Publication
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if items, _, err = b.History("slow", broker.HistoryQuery{}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range items {
		if string(p.Data) == `"once"` {
			t.Fatalf("publish answered ErrUnavailable (\"nothing was done, retry\") but the publication is in history at offset %d", p.Offset)
		}
	}
}

// Options.Timeout "bounds one Redis call" (redis.go:68), but the calls pass
// it only as a context deadline (redis.go:212-214), which go-redis ignores
// unless the client has ContextTimeoutEnabled — the server's client
// (redis.ParseURL in server/broker.go) does not. A Redis call waits for the
// client's ReadTimeout (3s by default, and retried) instead.
func TestAuditTimeoutDoesNotBoundRedisCalls(t *testing.T) {
	prefix := srv.Prefix()
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	cl := redis.NewClient(opts)
	defer cl.Close()
	b := start(t, Options{Client: cl, Prefix: prefix, Timeout: 50 * time.Millisecond})
	ho := slowPublish(t, b, prefix, "slowcall", 500000)
	t0 := time.Now()
	_, err = b.Publish("slowcall", broker.Publication{}, ho)
	if d := time.Since(t0); d > 250*time.Millisecond {
		t.Fatalf("publish with Timeout 50ms took %v (err %v)", d, err)
	}
}

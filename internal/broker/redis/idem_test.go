package redisbroker

import (
	"context"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// Idempotency keys belong to their channel, whatever ':' the channel name
// and the key hold: channel "a" with key "b:c" and channel "a:b" with key
// "c" are two publications (the key's Redis name frames the channel by its
// length).
func TestIdempotencyKeysPerChannel(t *testing.T) {
	b := start(t, Options{Prefix: srv.Prefix()})
	o := func(key string) broker.PublishOptions {
		return broker.PublishOptions{IdempotencyKey: key, IdempotencyWindow: time.Minute}
	}
	for i := 0; i < 3; i++ { // channel "a" stands at offset 3
		if _, err := b.Publish(context.Background(), "a", broker.Publication{}, broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Publish(context.Background(), "a", broker.Publication{Data: []byte(`1`)}, o("b:c")); err != nil {
		t.Fatal(err)
	}
	res, err := b.Publish(context.Background(), "a:b", broker.Publication{Data: []byte(`2`)}, o("c"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || res.Offset != 1 {
		t.Fatalf("first publish on channel a:b with a fresh key: %+v, want offset 1 and not a duplicate", res)
	}
}

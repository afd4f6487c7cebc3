package redisbroker

import (
	"context"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// Idempotency keys: which channel and which stream a key belongs to.

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

// An idempotency key that outlives its channel's stream (StreamTTL shorter
// than the window, or the meta hash evicted) belongs to the old epoch: a
// publish with it in the new stream is a new publication, and the stream's
// keys get their TTL as after any publish.
func TestIdempotencyKeyOutlivingItsStream(t *testing.T) {
	prefix := srv.Prefix()
	b := start(t, Options{Prefix: prefix, StreamTTL: 100 * time.Millisecond})
	o := broker.PublishOptions{IdempotencyKey: "k", IdempotencyWindow: time.Minute}
	for i := 0; i < 2; i++ {
		if _, err := b.Publish(context.Background(), "e", broker.Publication{}, broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := b.Publish(context.Background(), "e", broker.Publication{}, o)
	if err != nil || first.Offset != 3 {
		t.Fatalf("first publish: %+v %v", first, err)
	}
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	// The stream's keys live as long as the key's window at least...
	if ttl := c.PTTL(ctx, prefix+":m:e").Val(); ttl < 30*time.Second {
		t.Fatalf("meta hash PTTL %v, want the idempotency window's minute", ttl)
	}
	// ...but Redis may still lose them (eviction, a restart): the key is
	// then from an older epoch.
	c.Del(ctx, prefix+":m:e", prefix+":h:e")
	again, err := b.Publish(context.Background(), "e", broker.Publication{}, o)
	if err != nil {
		t.Fatal(err)
	}
	if again.Duplicate || again.Offset != 1 || again.Epoch == first.Epoch {
		t.Fatalf("publish with the key of a lost stream: %+v, want a new publication, offset 1 of a new epoch", again)
	}
	if ttl := c.PTTL(ctx, prefix+":m:e").Val(); ttl < 0 {
		t.Fatalf("meta hash PTTL %v: it never expires", ttl)
	}
	if dup, err := b.Publish(context.Background(), "e", broker.Publication{}, o); err != nil || !dup.Duplicate || dup.Offset != 1 || dup.Epoch != again.Epoch {
		t.Fatalf("the key again in the new epoch: %+v %v, want the duplicate of offset 1", dup, err)
	}
}

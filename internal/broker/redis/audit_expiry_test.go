package redisbroker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// A duplicate publish after the channel's stream expired (StreamTTL shorter
// than the idempotency window, or the meta hash evicted) returns early in
// publishScript (scripts.go:70) after luaCommon re-created the meta hash
// (scripts.go:35-38) but before keep(): the new meta hash has no TTL and
// lives in Redis forever, contrary to "the meta hash and the history list
// always expire together" and Options.StreamTTL. The answer also pairs the
// old epoch's offset with the new epoch, a position that epoch never had.
func TestAuditDuplicateAfterExpiryLeavesMetaWithoutTTL(t *testing.T) {
	prefix := srv.Prefix()
	b := start(t, Options{Prefix: prefix, StreamTTL: 100 * time.Millisecond})
	o := broker.PublishOptions{IdempotencyKey: "k", IdempotencyWindow: time.Minute}
	for i := 0; i < 2; i++ {
		if _, err := b.Publish("e", broker.Publication{}, broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := b.Publish("e", broker.Publication{}, o)
	if err != nil || first.Offset != 3 {
		t.Fatalf("first publish: %+v %v", first, err)
	}
	time.Sleep(300 * time.Millisecond) // the stream expires; the key (1 min) does not
	dup, err := b.Publish("e", broker.Publication{}, o)
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	ttl, err := c.PTTL(context.Background(), prefix+":m:e").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, pos, err := b.History("e", broker.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	if ttl < 0 {
		errs = append(errs, fmt.Sprintf("meta hash PTTL %v after the duplicate: it never expires", ttl))
	}
	if dup.Epoch == pos.Epoch && dup.Offset > pos.Offset {
		errs = append(errs, fmt.Sprintf("duplicate answered %+v, beyond the epoch's position %+v", dup.Position, pos))
	}
	if len(errs) > 0 {
		t.Fatal(errs)
	}
}

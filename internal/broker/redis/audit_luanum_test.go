package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/herald-rt/herald/internal/broker"
)

// Lua 5.1 formats numbers with "%.14g": from offset 10^14 the publish script
// writes the offset as "1e+14" in its answer (tostring(off), scripts.go:87),
// the history entry and the pub/sub message (scripts.go:76, 86). Publish
// then reports offset 0 (the ParseUint error is ignored, redis.go:244), the
// publication is dropped by every node as malformed, and the history entry
// makes every later History/Subscribe of the channel fail as unavailable.
func TestAuditLuaFormatsBigOffsets(t *testing.T) {
	prefix := srv.Prefix()
	b := start(t, Options{Prefix: prefix})
	ho := broker.PublishOptions{History: broker.HistoryOptions{Size: 10}}
	first, err := b.Publish("big", broker.Publication{}, ho)
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	const before = 99999999999999 // 10^14 - 1
	if err := c.HSet(context.Background(), prefix+":m:big", "o", strconv.FormatUint(before, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := b.Publish("big", broker.Publication{}, ho)
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	if res.Offset != before+1 || res.Epoch != first.Epoch {
		errs = append(errs, fmt.Sprintf("publish answered %+v, want offset %d", res.Position, uint64(before+1)))
	}
	if _, _, err := b.History("big", broker.HistoryQuery{}); err != nil {
		errs = append(errs, fmt.Sprintf("history: %v", err))
	}
	if len(errs) > 0 {
		t.Fatal(errs)
	}
}

package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/herald-rt/herald/internal/broker"
)

// Offsets of 10^14 and more keep every digit (Lua 5.1 would write 1e+14):
// in Publish's answer, in history and in deliveries.
func TestBigOffsets(t *testing.T) {
	prefix := srv.Prefix()
	b := start(t, Options{Prefix: prefix})
	ho := broker.PublishOptions{History: broker.HistoryOptions{Size: 10}}
	first, err := b.Publish(context.Background(), "big", broker.Publication{}, ho)
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	const before = 99999999999999 // 10^14 - 1
	if err := c.HSet(context.Background(), prefix+":m:big", "o", strconv.FormatUint(before, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := b.Publish(context.Background(), "big", broker.Publication{}, ho)
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	if res.Offset != before+1 || res.Epoch != first.Epoch {
		errs = append(errs, fmt.Sprintf("publish answered %+v, want offset %d", res.Position, uint64(before+1)))
	}
	if _, _, err := b.History(context.Background(), "big", broker.HistoryQuery{}); err != nil {
		errs = append(errs, fmt.Sprintf("history: %v", err))
	}
	if len(errs) > 0 {
		t.Fatal(errs)
	}
}

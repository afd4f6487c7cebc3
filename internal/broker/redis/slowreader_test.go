package redisbroker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/redistest"
)

// A node that stops reading its pub/sub connection (its delivery workers
// stuck for a while) is cut off by Redis at the pub/sub output-buffer
// limit, instead of making Redis hold what it owes the node without bound:
// the node sees the loss and closes its subscribers to recover. Newer Redis
// versions apply that limit only to RESP2 pub/sub clients (a RESP3 one
// counts as a normal client, unlimited by default), so the broker's pub/sub
// connections speak RESP2 (this test's Redis 7.0 limits either).
func TestStalledNodeIsCutOffByRedis(t *testing.T) {
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Stop()
	c := own.Client()
	defer c.Close()
	ctx := context.Background()
	if err := c.ConfigSet(ctx, "client-output-buffer-limit", "pubsub 256kb 256kb 0").Err(); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	lost := make(chan struct{}, 1)
	sub := start(t, Options{Redis: own.Options(), Workers: 1,
		Deliver: func(string, *broker.Publication) int { <-release; return 1 },
		OnLive: func(live bool) {
			if !live {
				select {
				case lost <- struct{}{}:
				default:
				}
			}
		}})
	joinNow(t, sub, "flood")
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " flags=P") && !strings.Contains(line, " resp=2") {
			t.Fatalf("a pub/sub connection that is not RESP2: %s", line)
		}
	}
	pub := start(t, Options{Redis: own.Options()})
	body := []byte(`"` + strings.Repeat("x", 1000) + `"`)
	for i := 0; i < 3000; i++ { // 3 MB, far past the 256 KiB limit
		if _, err := pub.Publish(context.Background(), "flood", broker.Publication{Data: body}, broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	close(release) // the node reads again, and finds what Redis did meanwhile
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("Redis held a stalled node's pub/sub output past its limit: the node never saw a loss")
	}
}

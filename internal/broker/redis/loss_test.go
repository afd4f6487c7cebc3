package redisbroker

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/redistest"
)

// Losses and gaps: every way a node can miss publications is seen and closes
// its subscribers so that they recover; none is silent.

// Losing the pub/sub connection is a gap on every channel with local
// state; the broker resubscribes and works again.
func TestSubscriptionLossIsAGap(t *testing.T) {
	gaps := make(chan string, 10)
	var lives []bool
	var mu sync.Mutex
	b := start(t, Options{Prefix: srv.Prefix(), Deliver: func(string, *broker.Publication) int { return 1 }, OnGap: func(ch string) { gaps <- ch }, OnLive: func(l bool) {
		mu.Lock()
		lives = append(lives, l)
		mu.Unlock()
	}})
	if err := b.Subscribe(context.Background(), "g", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	if err := c.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-gaps:
		if ch != "g" {
			t.Fatalf("gap on %q, want g", ch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no gap reported after the subscription was killed")
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		mu.Lock()
		l := fmt.Sprint(lives)
		mu.Unlock()
		if l == "[true false true]" && b.Live() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live transitions %s", l)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// go-redis subscribed the new connection to g again; a join there
	// waits for that to be confirmed, and then listens.
	if err := b.Subscribe(context.Background(), "g", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); err != nil {
		t.Fatal(err)
	}
	res, err := b.Publish(context.Background(), "g", broker.Publication{}, broker.PublishOptions{})
	if err != nil || res.Offset != 1 || res.Delivered != 1 {
		t.Fatalf("publish after resubscribing: %+v %v", res, err)
	}
}

// An offset skipped on the way (here: published straight into Redis by
// someone who is not a node) is a gap on the channel, reported before the
// publication after it is delivered: the subscribers closed for it keep a
// last offset from before the gap, so their recovery sees it.
func TestSkippedOffsetIsAGap(t *testing.T) {
	var mu sync.Mutex
	var events []string
	note := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	prefix := srv.Prefix()
	b := start(t, Options{Prefix: prefix, OnGap: func(ch string) { note("gap " + ch) },
		Deliver: func(ch string, p *broker.Publication) int { note(fmt.Sprint(ch, " ", p.Offset)); return 1 }})
	if err := b.Subscribe(context.Background(), "og", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(context.Background(), "og", broker.Publication{}, broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	c.HIncrBy(context.Background(), prefix+":m:og", "o", 1) // offset 2 never published
	if _, err := b.Publish(context.Background(), "og", broker.Publication{}, broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(events); got != "[og 1 gap og og 3]" {
		t.Fatalf("events %s, want [og 1 gap og og 3]", got)
	}
}

// A subscription lost to an unanswered ping (Redis busy or paused, the
// connection itself intact) is a loss like any other: the node takes a new
// connection and subscribes it to the channels it listened to, and joins
// there work again. (go-redis keeps a connection after a read timeout; the
// channels used to wait for a confirmation that never came on it, and every
// later join on them failed.)
func TestUnansweredPingIsALoss(t *testing.T) {
	prefix := srv.Prefix()
	var lost, back = make(chan struct{}, 1), make(chan struct{}, 1)
	b := start(t, Options{Prefix: prefix, Timeout: 2 * time.Second, pingEvery: 300 * time.Millisecond,
		Deliver: func(string, *broker.Publication) int { return 1 },
		OnLive: func(live bool) {
			ch := back
			if !live {
				ch = lost
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}})
	select {
	case <-back: // the first time live, in start
	default:
	}
	joinNow(t, b, "p")
	c := srv.Client()
	defer c.Close()
	// 300 ms of silence, then a ping unanswered for 300 ms more.
	if err := c.Do(context.Background(), "client", "pause", "1000", "all").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("subscription not lost while Redis was paused")
	}
	select {
	case <-back:
	case <-time.After(10 * time.Second):
		t.Fatal("subscription not live again")
	}
	if !b.Live() {
		t.Fatal("told live, but not live")
	}
	if n := numsub(t, prefix+":c:p"); n != 1 {
		t.Fatalf("%d listeners of p in Redis", n)
	}
	for i := 0; i < 3; i++ {
		err := b.Subscribe(context.Background(), "p", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil })
		if err == nil {
			return
		}
		t.Logf("join %d after the loss: %v", i, err)
	}
	t.Fatal("every join on p fails after the ping-timeout loss")
}

// A pub/sub connection that breaks while the receive loop is busy (here:
// blocked handing messages to a slow worker, as when Redis kills a slow
// subscriber for its output buffer), and that a join's SUBSCRIBE finds
// broken first, is reported lost: publications it held are not silently
// gone. (go-redis used to replace it inside the join's call, and the
// receive loop read on from the new one without seeing a loss.)
func TestConnectionBrokenUnderAJoinIsALoss(t *testing.T) {
	prefix := srv.Prefix()
	release := make(chan struct{})
	var first sync.Once
	var mu sync.Mutex
	got := map[uint64]bool{}
	var gaps, losses atomic.Int64
	sub := start(t, Options{Prefix: prefix, Workers: 1, Timeout: 5 * time.Second,
		Deliver: func(ch string, p *broker.Publication) int {
			if ch != "busy" {
				return 0
			}
			first.Do(func() { <-release })
			mu.Lock()
			got[p.Offset] = true
			mu.Unlock()
			return 1
		},
		OnGap: func(string) { gaps.Add(1) },
		OnLive: func(live bool) {
			if !live {
				losses.Add(1)
			}
		}})
	pub := start(t, Options{Prefix: prefix})
	joinNow(t, sub, "busy")
	const n = 1200
	for i := 0; i < n; i++ {
		if _, err := pub.Publish(context.Background(), "busy", broker.Publication{}, broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The worker is stuck in its first Deliver, its queue full: the receive
	// loop is blocked in dispatch, not reading the connection.
	for deadline := time.Now().Add(5 * time.Second); len(sub.queues[0]) < cap(sub.queues[0]); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d", len(sub.queues[0]))
		}
	}
	// Break sub's pub/sub connection (the one with two subscriptions).
	c := srv.Client()
	defer c.Close()
	list, err := c.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " sub=2 ") {
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					if err := c.Do(context.Background(), "client", "kill", "id", id).Err(); err != nil {
						t.Fatal(err)
					}
					killed++
				}
			}
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d connections, want sub's pub/sub connection", killed)
	}
	time.Sleep(100 * time.Millisecond)
	joined := make(chan error, 1)
	go func() {
		joined <- sub.Subscribe(context.Background(), "other", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil })
	}()
	time.Sleep(300 * time.Millisecond)
	close(release)
	if err := <-joined; err != nil {
		t.Logf("join on other: %v", err)
	}
	time.Sleep(time.Second)
	mu.Lock()
	missed := 0
	for off := uint64(1); off <= n; off++ {
		if !got[off] {
			missed++
		}
	}
	mu.Unlock()
	if missed > 0 && gaps.Load() == 0 && losses.Load() == 0 {
		t.Fatalf("%d of %d publications of busy never delivered, yet no gap and no loss was reported", missed, n)
	}
	t.Logf("missed %d, gaps %d, losses %d", missed, gaps.Load(), losses.Load())
}

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

// When Redis comes back with older data than it had (a restart from its
// last RDB snapshot or an AOF fsynced every second, a failover to a replica
// that had not caught up), the channel's stored epoch is the old one and
// lost offsets are handed out again. The epochs the broker reports carry the
// Redis instance's run id, which a restarted Redis does not share: a
// subscriber that saw the old offsets 3..5 recovers with recovered:false,
// not recovered:true over the new 3..5.
func TestRedisRollbackIsAGap(t *testing.T) {
	dir := t.TempDir()
	rs := persistentRedis(t, dir)
	defer func() { _ = rs.Process.Kill(); _ = rs.Wait() }()
	cOpts := &redis.Options{Network: "unix", Addr: filepath.Join(dir, "redis.sock")}
	b := start(t, Options{Redis: cOpts, Prefix: "rb"})
	c := redis.NewClient(cOpts)
	defer c.Close()
	ctx := context.Background()
	ho := broker.PublishOptions{History: broker.HistoryOptions{Size: 100}}
	pub := func(data string) broker.PublishResult {
		t.Helper()
		var res broker.PublishResult
		var err error
		for deadline := time.Now().Add(4 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if res, err = b.Publish(context.Background(), "r", broker.Publication{Data: []byte(data)}, ho); err == nil {
				return res
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
		}
	}
	pub("1")
	pub("2")
	if err := c.Save(ctx).Err(); err != nil { // the last snapshot before the crash
		t.Fatal(err)
	}
	pub("3")
	pub("4")
	seen := pub("5") // a subscriber has seen up to here when Redis crashes
	_ = rs.Process.Kill()
	_ = rs.Wait()
	rs = persistentRedis(t, dir)
	pub("3'")
	pub("4'")
	pub("5'")
	pub("6'")
	var rec broker.Recovery
	err := b.Subscribe(context.Background(), "r", broker.SubscribeOptions{Since: &broker.Since{Offset: seen.Offset, Epoch: seen.Epoch}, History: ho.History},
		func(r broker.Recovery) error { rec = r; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if rec.Recovered {
		var got []string
		for _, p := range rec.Publications {
			got = append(got, string(p.Data))
		}
		t.Fatalf("recovery from %+v after Redis lost offsets 3..5: recovered:true with %v; the subscriber never gets 3' 4' 5'", seen.Position, got)
	}
}

package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
)

// Publishes: what a publish answers (offset, Delivered, an unknown outcome)
// and that it runs once.

// A join on the same node that completes while a publish's script is on
// its way gets the publication (it comes after the join's marker), and the
// publish counts it: it used to decide not to wait for its echo before its
// script ran, and answered Delivered 0.
func TestPublishCountsAJoinMadeWhileItRuns(t *testing.T) {
	started := make(chan struct{})
	var once atomic.Bool
	o := wrapped(func(c net.Conn) net.Conn { return delayConn{Conn: c, started: started, once: &once} })
	var joined atomic.Bool
	var queued atomic.Int64
	b := start(t, Options{Redis: o, Prefix: srv.Prefix(), Timeout: 3 * time.Second,
		Deliver: func(ch string, p *broker.Publication) int {
			if joined.Load() {
				queued.Add(1)
				return 1
			}
			return 0
		}})
	res := make(chan broker.PublishResult, 1)
	go func() {
		r, err := b.Publish(context.Background(), "d", broker.Publication{Data: []byte(`"DELAYED-PUBLICATION"`)}, broker.PublishOptions{})
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	<-started // the publish has decided it does not listen; its script is not sent yet
	if err := b.Subscribe(context.Background(), "d", broker.SubscribeOptions{}, func(broker.Recovery) error { joined.Store(true); return nil }); err != nil {
		t.Fatal(err)
	}
	r := <-res
	time.Sleep(100 * time.Millisecond)
	if q := queued.Load(); q != int64(r.Delivered) {
		t.Fatalf("publication at offset %d queued to %d local connection(s), but Publish answered Delivered %d", r.Offset, q, r.Delivered)
	}
}

// A publish whose script answer comes back after the node lost (and
// re-established) its subscription does not wait for an echo that came
// through the old subscription or never will: it answers at once, with
// Delivered 0.
func TestPublishAcrossSubscriptionLossAnswersAtOnce(t *testing.T) {
	p := newSlowProxy(t, srv.Socket, 300*time.Millisecond)
	cOpts := &redis.Options{Network: "unix", Addr: p.ln.Addr().String()}
	b := start(t, Options{Redis: cOpts, Prefix: srv.Prefix(), Timeout: 20 * time.Second,
		Deliver: func(string, *broker.Publication) int { return 1 }})
	if _, err := b.Publish(context.Background(), "w", broker.Publication{}, broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	// The pub/sub connection was made first (by Run); only the command
	// connection made by the publish above gets slow replies.
	p.fast.Store(1)
	p.slow.Store(p.count.Load() + 1)
	done := make(chan time.Duration, 1)
	var res broker.PublishResult
	go func() {
		t0 := time.Now()
		res, _ = b.Publish(context.Background(), "w", broker.Publication{}, broker.PublishOptions{})
		done <- time.Since(t0)
	}()
	time.Sleep(100 * time.Millisecond)
	k := srv.Client()
	defer k.Close()
	if err := k.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	d := <-done
	if d > 10*time.Second { // a failure bound for a loaded machine, half the Timeout
		t.Fatalf("publish took %v (Timeout 20s) after the subscription was lost and back; result %+v", d, res)
	}
}

// Offsets of 10^14 and more keep every digit (Lua 5.1 would write 1e+14):
// in Publish's answer, in history and in deliveries.
func TestPublishKeepsEveryDigitOfLargeOffsets(t *testing.T) {
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

// A reply later than the client's read timeout is not retried: go-redis
// would send EVALSHA again on a new connection and Redis would run the
// publish script twice. The broker's pool has retries off, whatever the
// options it is given.
func TestPublishIsNeverRetriedAfterALateReply(t *testing.T) {
	p := newSlowProxy(t, srv.Socket, 300*time.Millisecond)
	cOpts := &redis.Options{Network: "unix", Addr: p.ln.Addr().String(), ReadTimeout: 200 * time.Millisecond}
	b := start(t, Options{Redis: cOpts, Prefix: srv.Prefix()})
	ho := broker.PublishOptions{History: broker.HistoryOptions{Size: 10}}
	if _, err := b.Publish(context.Background(), "twice", broker.Publication{Data: []byte(`"before"`)}, ho); err != nil {
		t.Fatal(err)
	}
	p.slow.Store(p.count.Load() + 1) // the connections open now get slow replies
	res, err := b.Publish(context.Background(), "twice", broker.Publication{Data: []byte(`"once"`)}, ho)
	p.slow.Store(0)
	t.Logf("publish answered %+v, %v", res, err)
	var items []broker.Publication
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if items, _, err = b.History(context.Background(), "twice", broker.HistoryQuery{}); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var offsets []uint64
	for _, it := range items {
		if string(it.Data) == `"once"` {
			offsets = append(offsets, it.Offset)
		}
	}
	if len(offsets) > 1 {
		t.Fatalf("one Publish stored the publication %d times, at offsets %v", len(offsets), offsets)
	}
}

// A publish whose answer does not come in time (here: read_timeout=100ms,
// as --redis-url "...?read_timeout=100ms" makes it) may still have been
// carried out: Redis runs a script it has started to the end. The error says
// so (ErrOutcomeUnknown, besides ErrUnavailable), and indeed the publication
// is stored: "nothing was done, retry" would have published it twice.
func TestPublishWithoutAnswerIsOutcomeUnknown(t *testing.T) {
	prefix := srv.Prefix()
	opts, err := redis.ParseURL(srv.URL() + "?read_timeout=100ms")
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, Options{Redis: opts, Prefix: prefix})
	// The history is read back on a broker without the short read timeout
	// (Redis answers that read after the script, which may run for seconds
	// on a loaded machine: 60 s is a failure bound), made live before it.
	rb := start(t, Options{Prefix: prefix, Timeout: 60 * time.Second})
	ho := slowPublish(t, prefix, "slow", 500000)
	_, err = b.Publish(context.Background(), "slow", broker.Publication{Data: []byte(`"once"`)}, ho)
	if !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, broker.ErrOutcomeUnknown) {
		t.Fatalf("publish with a slow script: %v, want ErrUnavailable and ErrOutcomeUnknown", err)
	}
	var items []broker.Publication
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		// rb may lose its subscription to a script longer than its ping
		// timeout, and be unavailable until it has a new one.
		if items, _, err = rb.History(context.Background(), "slow", broker.HistoryQuery{}); err == nil {
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

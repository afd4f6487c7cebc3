// Package brokertest is the conformance suite every herald broker must pass,
// in the manner of testing/slogtest: each implementation's tests call Run
// with a factory.
package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// Factory returns a fresh, empty broker that calls deliver for every
// accepted publication of a channel it has had a join on (a broker may
// skip channels no one on its node follows, as the Redis one does).
type Factory func(t *testing.T, deliver broker.DeliverFunc) broker.Broker

// recorder collects deliveries per channel.
type recorder struct {
	mu  sync.Mutex
	got map[string][]broker.Publication
}

func (r *recorder) deliver(ch string, p *broker.Publication) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got == nil {
		r.got = map[string][]broker.Publication{}
	}
	r.got[ch] = append(r.got[ch], *p)
	return 1
}

// join subscribes to each channel, as a node does for its first local
// subscriber.
func join(t *testing.T, b broker.Broker, channels ...string) {
	t.Helper()
	for _, ch := range channels {
		if err := b.Subscribe(context.Background(), ch, broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

func data(i int) json.RawMessage { return json.RawMessage(fmt.Sprint(i)) }

var keep = broker.PublishOptions{History: broker.HistoryOptions{Size: 10, TTL: time.Minute}}

// Run runs every conformance test against brokers made by f.
func Run(t *testing.T, f Factory) {
	t.Run("OffsetsConsecutiveAndDeliveredInOrder", func(t *testing.T) {
		var r recorder
		b := f(t, r.deliver)
		join(t, b, "a", "b")
		var epoch string
		for i := 1; i <= 20; i++ {
			res, err := b.Publish(context.Background(), "a", broker.Publication{Data: data(i)}, broker.PublishOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Offset != uint64(i) || res.Epoch == "" || (epoch != "" && res.Epoch != epoch) {
				t.Fatalf("publish %d: %+v (epoch %q)", i, res, epoch)
			}
			epoch = res.Epoch
		}
		if _, err := b.Publish(context.Background(), "b", broker.Publication{Data: data(1)}, broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		for i, p := range r.got["a"] {
			if p.Offset != uint64(i+1) || string(p.Data) != fmt.Sprint(i+1) || p.Time.IsZero() {
				t.Fatalf("delivery %d = %+v", i, p)
			}
		}
		if len(r.got["a"]) != 20 || len(r.got["b"]) != 1 || r.got["b"][0].Offset != 1 {
			t.Fatalf("deliveries: a=%d b=%v", len(r.got["a"]), r.got["b"])
		}
	})

	t.Run("HistoryBoundedBySize", func(t *testing.T) {
		b := f(t, nil)
		for i := 1; i <= 25; i++ {
			_, _ = b.Publish(context.Background(), "h", broker.Publication{Data: data(i), Event: "e", From: "u", Origin: "c1"}, keep)
		}
		items, pos, err := b.History(context.Background(), "h", broker.HistoryQuery{})
		if err != nil || len(items) != 10 || items[0].Offset != 16 || items[9].Offset != 25 || pos.Offset != 25 {
			t.Fatalf("history %v %+v %v", offsets(items), pos, err)
		}
		if items[0].Event != "e" || items[0].From != "u" || items[0].Origin != "" || string(items[0].Data) != "16" {
			t.Fatalf("fields lost: %+v", items[0])
		}
		items, _, _ = b.History(context.Background(), "h", broker.HistoryQuery{Limit: 3})
		if fmt.Sprint(offsets(items)) != "[23 24 25]" {
			t.Fatalf("newest 3: %v", offsets(items))
		}
		items, _, _ = b.History(context.Background(), "h", broker.HistoryQuery{Since: &broker.Since{Offset: 20, Epoch: pos.Epoch}, Limit: 2})
		if fmt.Sprint(offsets(items)) != "[21 22]" {
			t.Fatalf("since 20 limit 2: %v", offsets(items))
		}
	})

	t.Run("NoHistoryWhenSizeZero", func(t *testing.T) {
		b := f(t, nil)
		for i := 1; i <= 3; i++ {
			_, _ = b.Publish(context.Background(), "n", broker.Publication{Data: data(i)}, broker.PublishOptions{})
		}
		items, pos, _ := b.History(context.Background(), "n", broker.HistoryQuery{})
		if len(items) != 0 || pos.Offset != 3 {
			t.Fatalf("%v %+v", items, pos)
		}
	})

	t.Run("RecoveryCases", func(t *testing.T) {
		b := f(t, nil)
		var epoch string
		for i := 1; i <= 15; i++ {
			res, _ := b.Publish(context.Background(), "r", broker.Publication{Data: data(i)}, keep)
			epoch = res.Epoch
		}
		cases := []struct {
			name      string
			since     broker.Since
			recovered bool
			offsets   string
		}{
			{"within history", broker.Since{Offset: 10, Epoch: epoch}, true, "[11 12 13 14 15]"},
			{"exactly at the oldest", broker.Since{Offset: 5, Epoch: epoch}, true, "[6 7 8 9 10 11 12 13 14 15]"},
			{"up to date", broker.Since{Offset: 15, Epoch: epoch}, true, "[]"},
			{"gap older than history", broker.Since{Offset: 2, Epoch: epoch}, false, "[6 7 8 9 10 11 12 13 14 15]"},
			{"other epoch", broker.Since{Offset: 10, Epoch: "stale"}, false, "[]"},
			{"from the future", broker.Since{Offset: 99, Epoch: epoch}, false, "[]"},
		}
		for _, tc := range cases {
			var got broker.Recovery
			err := b.Subscribe(context.Background(), "r", broker.SubscribeOptions{Since: &tc.since}, func(r broker.Recovery) error { got = r; return nil })
			if err != nil || got.Recovered != tc.recovered || fmt.Sprint(offsets(got.Publications)) != tc.offsets || got.Position.Offset != 15 || got.Position.Epoch != epoch {
				t.Errorf("%s: recovered=%v pubs=%v pos=%+v err=%v", tc.name, got.Recovered, offsets(got.Publications), got.Position, err)
			}
		}
		var got broker.Recovery
		_ = b.Subscribe(context.Background(), "r", broker.SubscribeOptions{}, func(r broker.Recovery) error { got = r; return nil })
		if got.Position.Offset != 15 || len(got.Publications) != 0 {
			t.Errorf("plain subscribe: %+v", got)
		}
		if err := b.Subscribe(context.Background(), "r", broker.SubscribeOptions{}, func(broker.Recovery) error { return fmt.Errorf("boom") }); err == nil || err.Error() != "boom" {
			t.Errorf("join error not returned: %v", err)
		}
	})

	t.Run("RecoveryByTime", func(t *testing.T) {
		b := f(t, nil)
		opts := broker.PublishOptions{History: broker.HistoryOptions{Size: 3, TTL: time.Minute}}
		var mid time.Time
		for i := 1; i <= 5; i++ {
			_, _ = b.Publish(context.Background(), "t", broker.Publication{Data: data(i)}, opts)
			if i == 3 {
				time.Sleep(5 * time.Millisecond)
				mid = time.Now()
				time.Sleep(5 * time.Millisecond)
			}
		}
		var got broker.Recovery
		_ = b.Subscribe(context.Background(), "t", broker.SubscribeOptions{Since: &broker.Since{Time: mid}}, func(r broker.Recovery) error { got = r; return nil })
		if !got.Recovered || fmt.Sprint(offsets(got.Publications)) != "[4 5]" {
			t.Fatalf("since mid: %+v", got)
		}
		_ = b.Subscribe(context.Background(), "t", broker.SubscribeOptions{Since: &broker.Since{Time: mid.Add(-time.Hour)}}, func(r broker.Recovery) error { got = r; return nil })
		if got.Recovered || fmt.Sprint(offsets(got.Publications)) != "[3 4 5]" {
			t.Fatalf("since long ago (1 and 2 were dropped): %+v", got)
		}
	})

	t.Run("RecoveryByTimeWithoutHistory", func(t *testing.T) {
		// A channel that keeps no history loses every publication to
		// recovery: by time, a publication after since is a gap.
		b := f(t, nil)
		before := time.Now()
		time.Sleep(2 * time.Millisecond)
		_ = b.Subscribe(context.Background(), "nh", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil })
		time.Sleep(2 * time.Millisecond)
		mid := time.Now()
		time.Sleep(2 * time.Millisecond)
		_, _ = b.Publish(context.Background(), "nh", broker.Publication{Data: data(1)}, broker.PublishOptions{})
		time.Sleep(2 * time.Millisecond)
		after := time.Now()
		var got broker.Recovery
		_ = b.Subscribe(context.Background(), "nh", broker.SubscribeOptions{Since: &broker.Since{Time: mid}}, func(r broker.Recovery) error { got = r; return nil })
		if got.Recovered || len(got.Publications) != 0 {
			t.Fatalf("since before an unkept publication: %+v", got)
		}
		_ = b.Subscribe(context.Background(), "nh", broker.SubscribeOptions{Since: &broker.Since{Time: after}}, func(r broker.Recovery) error { got = r; return nil })
		if !got.Recovered {
			t.Fatalf("since after the last publication: %+v", got)
		}
		// A channel first seen after since cannot vouch for what came
		// before it (a restart, or a channel forgotten while idle).
		_ = b.Subscribe(context.Background(), "fresh", broker.SubscribeOptions{Since: &broker.Since{Time: before}}, func(r broker.Recovery) error { got = r; return nil })
		if got.Recovered {
			t.Fatalf("since before the channel existed: %+v", got)
		}
	})

	t.Run("HistoryTTL", func(t *testing.T) {
		b := f(t, nil)
		opts := broker.PublishOptions{History: broker.HistoryOptions{Size: 100, TTL: 100 * time.Millisecond}}
		res, _ := b.Publish(context.Background(), "ttl", broker.Publication{Data: data(1)}, opts)
		_, _ = b.Publish(context.Background(), "ttl", broker.Publication{Data: data(2)}, opts)
		time.Sleep(200 * time.Millisecond)
		_, _ = b.Publish(context.Background(), "ttl", broker.Publication{Data: data(3)}, opts)
		items, _, _ := b.History(context.Background(), "ttl", broker.HistoryQuery{})
		if fmt.Sprint(offsets(items)) != "[3]" {
			t.Fatalf("after TTL: %v", offsets(items))
		}
		var got broker.Recovery
		_ = b.Subscribe(context.Background(), "ttl", broker.SubscribeOptions{Since: &broker.Since{Offset: 1, Epoch: res.Epoch}}, func(r broker.Recovery) error { got = r; return nil })
		if got.Recovered {
			t.Fatalf("offset 2 expired, yet recovered: %+v", got)
		}
	})

	t.Run("Idempotency", func(t *testing.T) {
		var r recorder
		b := f(t, r.deliver)
		join(t, b, "i")
		o := broker.PublishOptions{History: keep.History, IdempotencyKey: "k1", IdempotencyWindow: time.Minute}
		first, _ := b.Publish(context.Background(), "i", broker.Publication{Data: data(1)}, o)
		_, _ = b.Publish(context.Background(), "i", broker.Publication{Data: data(2)}, broker.PublishOptions{})
		again, _ := b.Publish(context.Background(), "i", broker.Publication{Data: data(1)}, o)
		if first.Duplicate || !again.Duplicate || again.Offset != first.Offset || first.Delivered != 1 || again.Delivered != 0 {
			t.Fatalf("first %+v again %+v", first, again)
		}
		if len(r.got["i"]) != 2 {
			t.Fatalf("duplicate delivered: %d deliveries", len(r.got["i"]))
		}
		short := broker.PublishOptions{IdempotencyKey: "k2", IdempotencyWindow: 50 * time.Millisecond}
		_, _ = b.Publish(context.Background(), "i", broker.Publication{}, short)
		time.Sleep(100 * time.Millisecond)
		if res, _ := b.Publish(context.Background(), "i", broker.Publication{}, short); res.Duplicate {
			t.Fatal("key outlived its window")
		}
	})

	// A key is remembered for its whole window however many other keys
	// come after it: a retry is a duplicate, or refused for room
	// (ErrIdempotencyFull), but never published a second time.
	t.Run("IdempotencyKeyOutlastsManyOthers", func(t *testing.T) {
		var r recorder
		b := f(t, r.deliver)
		join(t, b, "chat")
		keyed := func(key string) broker.PublishOptions {
			return broker.PublishOptions{IdempotencyKey: key, IdempotencyWindow: 5 * time.Minute}
		}
		job := json.RawMessage(`"job-17"`)
		first, err := b.Publish(context.Background(), "chat", broker.Publication{Data: job}, keyed("job-17"))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10_001 {
			if _, err := b.Publish(context.Background(), "chat", broker.Publication{Data: data(i)}, keyed(fmt.Sprint("other-", i))); err != nil && !errors.Is(err, broker.ErrIdempotencyFull) {
				t.Fatal(err)
			}
		}
		again, err := b.Publish(context.Background(), "chat", broker.Publication{Data: job}, keyed("job-17"))
		if err != nil && !errors.Is(err, broker.ErrIdempotencyFull) {
			t.Fatal(err)
		}
		if err == nil && (!again.Duplicate || again.Offset != first.Offset || again.Delivered != 0) {
			t.Fatalf("a retry inside the window was published again: first %+v, retry %+v", first, again)
		}
		n := 0
		r.mu.Lock()
		for _, p := range r.got["chat"] {
			if string(p.Data) == string(job) {
				n++
			}
		}
		r.mu.Unlock()
		if n != 1 {
			t.Fatalf("job-17 delivered %d times", n)
		}
	})

	// Publishers racing a recovering subscriber: the replay plus the live
	// deliveries after the join must be every offset exactly once, in order.
	t.Run("JoinRacesPublishers", func(t *testing.T) {
		var r JoinRecorder
		b := f(t, r.Deliver)
		JoinRace(t, b, b, &r)
	})
	t.Run("PlainJoinRacesPublishers", func(t *testing.T) {
		var r JoinRecorder
		b := f(t, r.Deliver)
		PlainJoinRace(t, b, b, &r)
	})
}

// JoinRecorder collects what a recovering subscriber sees: its replay, then
// what is delivered after its join. Its Deliver is the subscribing broker's
// DeliverFunc.
type JoinRecorder struct {
	mu     sync.Mutex
	joined bool
	seen   []uint64
}

// Deliver records a delivery made after the join.
func (r *JoinRecorder) Deliver(ch string, p *broker.Publication) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.joined {
		r.seen = append(r.seen, p.Offset)
	}
	return 1
}

// JoinRace publishes 2000 publications through pub from four goroutines and,
// once some are out, subscribes through sub with since the first: the
// replay plus the deliveries after the join (recorded by r, sub's
// DeliverFunc) must be every offset after since exactly once, in order. pub
// and sub are one broker, or two nodes of one cluster; deliveries that
// reach sub later than its publisher's answer are awaited for up to 5s.
func JoinRace(t *testing.T, pub, sub broker.Broker, r *JoinRecorder) {
	t.Helper()
	joinRace(t, pub, sub, r, true)
}

// PlainJoinRace is JoinRace with a subscribe without since: what the
// subscriber gets after the position its join reports (any publications
// the join hands over, then deliveries) must be every later offset exactly
// once, in order: a client takes that position for the last offset it has.
func PlainJoinRace(t *testing.T, pub, sub broker.Broker, r *JoinRecorder) {
	t.Helper()
	joinRace(t, pub, sub, r, false)
}

func joinRace(t *testing.T, pub, sub broker.Broker, r *JoinRecorder, recover bool) {
	t.Helper()
	const workers, each = 4, 500
	opts := broker.PublishOptions{History: broker.HistoryOptions{Size: 100000, TTL: time.Minute}}
	first, err := pub.Publish(context.Background(), "race", broker.Publication{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var published atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := pub.Publish(context.Background(), "race", broker.Publication{}, opts); err != nil {
					t.Error(err)
					return
				}
				published.Add(1)
			}
		}()
	}
	for published.Load() < 50 && !t.Failed() { // join in the middle of the race
		time.Sleep(50 * time.Microsecond)
	}
	o := broker.SubscribeOptions{Since: &broker.Since{Offset: first.Offset, Epoch: first.Epoch}}
	if !recover {
		o = broker.SubscribeOptions{}
	}
	start := first.Offset // the offset the subscriber has when it joins
	err = sub.Subscribe(context.Background(), "race", o, func(rec broker.Recovery) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if recover && !rec.Recovered {
			return fmt.Errorf("not recovered")
		}
		if !recover {
			start = rec.Position.Offset
		}
		r.seen = append(r.seen, offsets(rec.Publications)...)
		r.joined = true
		return nil
	})
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	want := int(first.Offset + workers*each - start)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r.mu.Lock()
		n := len(r.seen)
		r.mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) != want {
		t.Fatalf("saw %d offsets, want %d", len(r.seen), want)
	}
	for i, o := range r.seen {
		if o != start+uint64(i)+1 {
			t.Fatalf("position %d has offset %d, want %d (joined at %d)", i, o, start+uint64(i)+1, start)
		}
	}
}

func offsets(ps []broker.Publication) []uint64 {
	out := make([]uint64, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Offset)
	}
	return out
}

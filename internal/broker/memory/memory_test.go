package memory

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/broker/brokertest"
	"github.com/herald-rt/herald/internal/budget"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, deliver broker.DeliverFunc) broker.Broker {
		return New(Options{Deliver: deliver})
	})
}

func TestSweepFreesIdleStreams(t *testing.T) {
	now := time.Now() // a clock of the test's own: the TTL passes when the test says
	b := New(Options{Now: func() time.Time { return now }})
	keep := broker.PublishOptions{History: broker.HistoryOptions{Size: 5, TTL: 50 * time.Millisecond}}
	first, _ := b.Publish(context.Background(), "hist", broker.Publication{}, keep)
	_, _ = b.Publish(context.Background(), "plain", broker.Publication{}, broker.PublishOptions{})
	_, _ = b.Publish(context.Background(), "busy", broker.Publication{}, broker.PublishOptions{})
	inUse := func(ch string) bool { return ch == "busy" }
	b.Sweep(0, inUse)
	if b.Streams() != 2 { // hist keeps its history, busy has subscribers
		t.Fatalf("streams = %d, want 2", b.Streams())
	}
	now = now.Add(80 * time.Millisecond)
	b.Sweep(0, inUse)
	if b.Streams() != 1 {
		t.Fatalf("streams = %d after expiry, want 1", b.Streams())
	}
	// History lost: the channel starts a new epoch, and recovery says so.
	var got broker.Recovery
	_ = b.Subscribe(context.Background(), "hist", broker.SubscribeOptions{Since: &broker.Since{Offset: first.Offset, Epoch: first.Epoch}}, func(r broker.Recovery) error { got = r; return nil })
	if got.Recovered || got.Position.Epoch == first.Epoch || got.Position.Offset != 0 {
		t.Fatalf("after loss: %+v", got)
	}
}

func BenchmarkPublishWithHistory(b *testing.B) {
	br := New(Options{Deliver: func(string, *broker.Publication) int { return 0 }})
	o := broker.PublishOptions{History: broker.HistoryOptions{Size: 1000, TTL: time.Minute}}
	p := broker.Publication{Data: []byte(`{"x":1}`)}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = br.Publish(context.Background(), "bench", p, o)
	}
}

func TestHistoryChannelKeepsEpochBeforeFirstPublication(t *testing.T) {
	now := time.Now()
	b := New(Options{Now: func() time.Time { return now }})
	hist := broker.HistoryOptions{Size: 10, TTL: 5 * time.Minute}
	var first broker.Recovery
	_ = b.Subscribe(context.Background(), "room", broker.SubscribeOptions{History: hist}, func(r broker.Recovery) error { first = r; return nil })
	now = now.Add(2 * time.Minute) // longer than the idle sweep, shorter than the TTL
	b.Sweep(time.Minute, nil)
	_, _ = b.Publish(context.Background(), "room", broker.Publication{}, broker.PublishOptions{History: hist})
	var got broker.Recovery
	since := broker.Since{Offset: first.Position.Offset, Epoch: first.Position.Epoch}
	_ = b.Subscribe(context.Background(), "room", broker.SubscribeOptions{Since: &since, History: hist}, func(r broker.Recovery) error { got = r; return nil })
	if !got.Recovered || len(got.Publications) != 1 {
		t.Fatalf("recovery before any event: %+v", got)
	}
}

// recover subscribes to channel with since (offset in epoch) and returns
// what the join saw.
func recoverFrom(t *testing.T, b *Broker, channel string, offset uint64, epoch string) broker.Recovery {
	t.Helper()
	var got broker.Recovery
	since := broker.Since{Offset: offset, Epoch: epoch}
	if err := b.Subscribe(context.Background(), channel, broker.SubscribeOptions{Since: &since}, func(r broker.Recovery) error { got = r; return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestHistoryBudget: history of all channels together stays within
// MaxBytes. A channel over it evicts its own oldest; a channel with nothing
// to evict delivers without keeping; recovery past a dropped publication
// reports the gap; expired history gives the budget back.
func TestHistoryBudget(t *testing.T) {
	now := time.Now()
	data := make([]byte, 1000-pubOverhead) // pubBytes 1000 each
	delivered, dropped := 0, 0
	b := New(Options{
		Now:      func() time.Time { return now },
		Deliver:  func(string, *broker.Publication) int { delivered++; return 1 },
		MaxBytes: 3500,
		OnDrop:   func(n int) { dropped += n },
	})
	hist := broker.PublishOptions{History: broker.HistoryOptions{Size: 100, TTL: time.Minute}}
	var last broker.PublishResult
	for range 5 {
		last, _ = b.Publish(context.Background(), "a", broker.Publication{Data: data}, hist)
	}
	if b.HistoryBytes() != 3000 || dropped != 2 || delivered != 5 {
		t.Fatalf("after 5 to a: %d bytes, %d dropped, %d delivered; want 3000, 2, 5", b.HistoryBytes(), dropped, delivered)
	}
	// 1 and 2 were evicted: from 1, offset 2 is missing; from 2, all is there.
	if r := recoverFrom(t, b, "a", 1, last.Epoch); r.Recovered || len(r.Publications) != 3 || r.Publications[0].Offset != 3 {
		t.Fatalf("recovery past an evicted publication: recovered %v, %d publications", r.Recovered, len(r.Publications))
	}
	if r := recoverFrom(t, b, "a", 2, last.Epoch); !r.Recovered || len(r.Publications) != 3 {
		t.Fatalf("recovery within what is kept: recovered %v, %d publications", r.Recovered, len(r.Publications))
	}
	// b has nothing of its own to evict: delivered, not kept, and the gap shows.
	pb, _ := b.Publish(context.Background(), "b", broker.Publication{Data: data}, hist)
	if b.HistoryBytes() != 3000 || dropped != 3 || delivered != 6 {
		t.Fatalf("after b: %d bytes, %d dropped, %d delivered; want 3000, 3, 6", b.HistoryBytes(), dropped, delivered)
	}
	if r := recoverFrom(t, b, "b", 0, pb.Epoch); r.Recovered || len(r.Publications) != 0 {
		t.Fatalf("recovery of b past its unkept publication: recovered %v, %d publications", r.Recovered, len(r.Publications))
	}
	// a's history expires: the budget is free for b.
	now = now.Add(2 * time.Minute)
	b.Sweep(time.Hour, nil)
	if b.HistoryBytes() != 0 {
		t.Fatalf("%d bytes after expiry, want 0", b.HistoryBytes())
	}
	pb, _ = b.Publish(context.Background(), "b", broker.Publication{Data: data}, hist)
	if r := recoverFrom(t, b, "b", pb.Offset-1, pb.Epoch); !r.Recovered || len(r.Publications) != 1 || b.HistoryBytes() != 1000 {
		t.Fatalf("b after the budget came back: recovered %v, %d publications, %d bytes", r.Recovered, len(r.Publications), b.HistoryBytes())
	}
}

// TestHistoryBudgetAccounting: through random publishes (sizes, history
// sizes that shrink and grow), TTL expiry and sweeps over several channels,
// the counted bytes always equal what the channels hold, and never pass the
// budget.
func TestHistoryBudgetAccounting(t *testing.T) {
	now := time.Now()
	const budget = 50_000
	b := New(Options{Now: func() time.Time { return now }, MaxBytes: budget})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20_000 {
		ch := fmt.Sprint("c", rng.IntN(7))
		o := broker.PublishOptions{History: broker.HistoryOptions{Size: 1 + rng.IntN(40), TTL: time.Duration(1+rng.IntN(50)) * time.Millisecond}}
		_, _ = b.Publish(context.Background(), ch, broker.Publication{Data: make([]byte, rng.IntN(3000)), Event: "e", From: "u"}, o)
		now = now.Add(time.Duration(rng.IntN(500)) * time.Microsecond)
		if i%500 == 0 {
			b.Sweep(time.Millisecond, nil)
		}
		if i%97 == 0 {
			if held := heldBytes(b); held != b.HistoryBytes() || held > budget {
				t.Fatalf("step %d: channels hold %d bytes, counted %d, budget %d", i, held, b.HistoryBytes(), budget)
			}
		}
	}
}

// heldBytes recounts what every stream holds.
func heldBytes(b *Broker) int64 {
	var n int64
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for _, s := range sh.streams {
			s.mu.Lock()
			for _, p := range s.ordered() {
				n += pubBytes(&p)
			}
			s.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	return n
}

// TestRecoveryByTimeInTheMillisecondOfBirth: a client's since, which comes
// in milliseconds, from the millisecond its channel was made in is not
// taken for a time before the channel.
func TestRecoveryByTimeInTheMillisecondOfBirth(t *testing.T) {
	birth := time.Date(2026, 11, 22, 12, 0, 0, 400_000, time.UTC)
	now := birth
	b := New(Options{Now: func() time.Time { return now }})
	hist := broker.PublishOptions{History: broker.HistoryOptions{Size: 10, TTL: time.Minute}}
	_, _ = b.Publish(context.Background(), "room", broker.Publication{}, hist)
	now = birth.Add(300 * time.Microsecond)
	_, _ = b.Publish(context.Background(), "room", broker.Publication{}, hist)
	now = birth.Add(time.Second)
	var got broker.Recovery
	since := broker.Since{Time: birth.Truncate(time.Millisecond)} // as the wire gives it
	_ = b.Subscribe(context.Background(), "room", broker.SubscribeOptions{Since: &since}, func(r broker.Recovery) error { got = r; return nil })
	if !got.Recovered || len(got.Publications) != 2 {
		t.Fatalf("since the millisecond of birth: %+v", got)
	}
}

// TestIdempotencyKeyBudget: keys are bounded by bytes, never by forgetting
// one inside its window. Past the bound a keyed publish is refused (nothing
// published); a retry of a remembered key is still a duplicate; once the
// window has passed the keys' bytes are given back, to the broker's bound and
// to the process budget, and keyed publishes are accepted again.
func TestIdempotencyKeyBudget(t *testing.T) {
	now := time.Now()
	process := budget.New(1<<20, 0)
	const maxKeys = 64 << 10
	delivered := 0
	b := New(Options{Now: func() time.Time { return now }, MaxKeyBytes: maxKeys, KeyBudget: process,
		Deliver: func(string, *broker.Publication) int { delivered++; return 1 }})
	keyed := func(key string) broker.PublishOptions {
		return broker.PublishOptions{IdempotencyKey: key, IdempotencyWindow: 5 * time.Minute}
	}
	first, err := b.Publish(context.Background(), "chat", broker.Publication{}, keyed("job-17"))
	if err != nil {
		t.Fatal(err)
	}
	accepted, refused := 1, 0
	for i := range 10_000 {
		_, err := b.Publish(context.Background(), fmt.Sprint("c", i%50), broker.Publication{}, keyed(fmt.Sprint("other-", i)))
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, broker.ErrIdempotencyFull):
			refused++
		default:
			t.Fatal(err)
		}
		if b.KeyBytes() > maxKeys {
			t.Fatalf("keys hold %d bytes past their bound %d", b.KeyBytes(), maxKeys)
		}
	}
	if refused == 0 || delivered != accepted {
		t.Fatalf("accepted %d, refused %d, delivered %d: the bound refused nothing, or a refused publish was delivered", accepted, refused, delivered)
	}
	if b.KeyBytes() != process.Used() || process.Refused(budget.Process, budget.Keys) != 0 {
		t.Fatalf("keys count %d bytes, the process budget %d (refused %d)", b.KeyBytes(), process.Used(), process.Refused(budget.Process, budget.Keys))
	}
	again, err := b.Publish(context.Background(), "chat", broker.Publication{}, keyed("job-17"))
	if err != nil || !again.Duplicate || again.Offset != first.Offset {
		t.Fatalf("retry inside the window: %+v, %v", again, err)
	}
	now = now.Add(5*time.Minute + time.Second)
	b.Sweep(time.Hour, nil)
	if b.KeyBytes() != 0 || process.Used() != 0 {
		t.Fatalf("expired keys still counted: broker %d, process %d", b.KeyBytes(), process.Used())
	}
	if _, err := b.Publish(context.Background(), "chat", broker.Publication{}, keyed("job-18")); err != nil {
		t.Fatal(err)
	}

	// The process budget refuses too, when it is the tighter bound.
	small := budget.New(4096, 0)
	b = New(Options{Now: func() time.Time { return now }, KeyBudget: small})
	for i := 0; ; i++ {
		if _, err := b.Publish(context.Background(), "c", broker.Publication{}, keyed(fmt.Sprint("k", i))); err != nil {
			if !errors.Is(err, broker.ErrIdempotencyFull) || small.Refused(budget.Process, budget.Keys) != 1 || small.Used() > 4096 {
				t.Fatalf("after %d keys: %v, refused %d, used %d", i, err, small.Refused(budget.Process, budget.Keys), small.Used())
			}
			break
		}
	}
}

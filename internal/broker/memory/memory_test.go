package memory

import (
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/broker/brokertest"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, deliver broker.DeliverFunc) brokertest.Broker {
		return New(Options{Deliver: deliver})
	})
}

func TestSweepFreesIdleStreams(t *testing.T) {
	b := New(Options{})
	keep := broker.PublishOptions{History: broker.HistoryOptions{Size: 5, TTL: 50 * time.Millisecond}}
	first, _ := b.Publish("hist", broker.Publication{}, keep)
	_, _ = b.Publish("plain", broker.Publication{}, broker.PublishOptions{})
	_, _ = b.Publish("busy", broker.Publication{}, broker.PublishOptions{})
	inUse := func(ch string) bool { return ch == "busy" }
	b.Sweep(0, inUse)
	if b.Streams() != 2 { // hist keeps its history, busy has subscribers
		t.Fatalf("streams = %d, want 2", b.Streams())
	}
	time.Sleep(80 * time.Millisecond)
	b.Sweep(0, inUse)
	if b.Streams() != 1 {
		t.Fatalf("streams = %d after expiry, want 1", b.Streams())
	}
	// History lost: the channel starts a new epoch, and recovery says so.
	var got broker.Recovery
	_ = b.Subscribe("hist", broker.SubscribeOptions{Since: &broker.Since{Offset: first.Offset, Epoch: first.Epoch}}, func(r broker.Recovery) error { got = r; return nil })
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
		_, _ = br.Publish("bench", p, o)
	}
}

func TestHistoryChannelKeepsEpochBeforeFirstPublication(t *testing.T) {
	now := time.Now()
	b := New(Options{Now: func() time.Time { return now }})
	hist := broker.HistoryOptions{Size: 10, TTL: 5 * time.Minute}
	var first broker.Recovery
	_ = b.Subscribe("room", broker.SubscribeOptions{History: hist}, func(r broker.Recovery) error { first = r; return nil })
	now = now.Add(2 * time.Minute) // longer than the idle sweep, shorter than the TTL
	b.Sweep(time.Minute, nil)
	_, _ = b.Publish("room", broker.Publication{}, broker.PublishOptions{History: hist})
	var got broker.Recovery
	since := broker.Since{Offset: first.Position.Offset, Epoch: first.Position.Epoch}
	_ = b.Subscribe("room", broker.SubscribeOptions{Since: &since, History: hist}, func(r broker.Recovery) error { got = r; return nil })
	if !got.Recovered || len(got.Publications) != 1 {
		t.Fatalf("recovery before any event: %+v", got)
	}
}

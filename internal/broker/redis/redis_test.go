package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/broker/brokertest"
	"github.com/herald-rt/herald/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) {
	var err error
	if srv, err = redistest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	srv.Stop()
	os.Exit(code)
}

// start runs a broker on prefix until the test ends and waits until its
// subscription is live.
func start(t *testing.T, o Options) *Broker {
	t.Helper()
	if o.Redis == nil {
		o.Redis = srv.Options()
	}
	b := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx, time.Hour, time.Hour, nil)
	}()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(5 * time.Second); !b.Live(); {
		if time.Now().After(deadline) {
			t.Fatal("subscription not live after 5s")
		}
		time.Sleep(time.Millisecond)
	}
	return b
}

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, deliver broker.DeliverFunc) broker.Broker {
		return start(t, Options{Prefix: srv.Prefix(), Deliver: deliver})
	})
}

// Two nodes on one prefix, both with a subscriber: a publication on either
// reaches both, in order.
func TestTwoNodes(t *testing.T) {
	prefix := srv.Prefix()
	type rec struct {
		mu  sync.Mutex
		got []uint64
	}
	var ra, rb rec
	on := func(r *rec) broker.DeliverFunc {
		return func(ch string, p *broker.Publication) int {
			r.mu.Lock()
			r.got = append(r.got, p.Offset)
			r.mu.Unlock()
			return 1
		}
	}
	a := start(t, Options{Prefix: prefix, Deliver: on(&ra)})
	b := start(t, Options{Prefix: prefix, Deliver: on(&rb)})
	for _, n := range []*Broker{a, b} {
		if err := n.Subscribe(context.Background(), "x", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		n := a
		if i%2 == 1 {
			n = b
		}
		if _, err := n.Publish(context.Background(), "x", broker.Publication{Data: []byte(fmt.Sprint(i))}, broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ra.mu.Lock()
		rb.mu.Lock()
		ga, gb := fmt.Sprint(ra.got), fmt.Sprint(rb.got)
		rb.mu.Unlock()
		ra.mu.Unlock()
		want := "[1 2 3 4 5 6 7 8 9 10]"
		if ga == want && gb == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node a got %s, node b got %s, want %s on both", ga, gb, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A join on one node while another node's publishers race it: the replay
// plus what the joining node delivers afterwards is every offset once, in
// order.
func TestJoinOnOtherNodeRacesPublishers(t *testing.T) {
	prefix := srv.Prefix()
	var r brokertest.JoinRecorder
	pub := start(t, Options{Prefix: prefix})
	sub := start(t, Options{Prefix: prefix, Deliver: r.Deliver})
	brokertest.JoinRace(t, pub, sub, &r)
}

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
func TestOffsetGapIsReported(t *testing.T) {
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

// A join that finds the channel's stream made again (its keys expired or
// lost under subscribers of the old epoch) reports a gap for those, and the
// new subscriber starts in the new epoch.
func TestJoinIntoANewStream(t *testing.T) {
	gaps := make(chan string, 10)
	prefix := srv.Prefix()
	b := start(t, Options{Prefix: prefix, OnGap: func(ch string) { gaps <- ch }})
	if err := b.Subscribe(context.Background(), "ns", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); err != nil {
		t.Fatal(err)
	}
	old, err := b.Publish(context.Background(), "ns", broker.Publication{}, broker.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	c.Del(context.Background(), prefix+":m:ns", prefix+":h:ns")
	var got broker.Recovery
	if err := b.Subscribe(context.Background(), "ns", broker.SubscribeOptions{}, func(r broker.Recovery) error { got = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if got.Position.Epoch == old.Epoch || got.Position.Offset != 0 {
		t.Fatalf("joined at %+v, want offset 0 of a new epoch", got.Position)
	}
	select {
	case ch := <-gaps:
		if ch != "ns" {
			t.Fatalf("gap on %q", ch)
		}
	default:
		t.Fatal("the old epoch's subscribers were not told")
	}
	// The next publication is no gap for the new subscriber.
	if _, err := b.Publish(context.Background(), "ns", broker.Publication{}, broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-gaps:
		t.Fatalf("a gap on %q after the join into the new stream", ch)
	case <-time.After(50 * time.Millisecond):
	}
}

// With Redis gone, Publish, Subscribe and History fail at once with
// ErrUnavailable instead of hanging.
func TestRedisDownIsUnavailable(t *testing.T) {
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, Options{Redis: own.Options(), Timeout: time.Second})
	own.Stop()
	for deadline := time.Now().Add(5 * time.Second); b.Live(); {
		if time.Now().After(deadline) {
			t.Fatal("still live 5s after Redis stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t0 := time.Now()
	if _, err := b.Publish(context.Background(), "d", broker.Publication{}, broker.PublishOptions{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("publish: %v", err)
	}
	if err := b.Subscribe(context.Background(), "d", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("subscribe: %v", err)
	}
	if _, _, err := b.History(context.Background(), "d", broker.HistoryQuery{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("history: %v", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("calls took %v with Redis down", d)
	}
}

// Notify reaches every other node, in the order sent, and not the sender.
func TestNotify(t *testing.T) {
	prefix := srv.Prefix()
	type note struct {
		kind    byte
		payload string
	}
	got := make(chan note, 10)
	mine := make(chan note, 10)
	a := start(t, Options{Prefix: prefix, OnNotify: func(k byte, p string) { mine <- note{k, p} }})
	start(t, Options{Prefix: prefix, OnNotify: func(k byte, p string) { got <- note{k, p} }})
	for i := 0; i < 3; i++ {
		if err := a.Notify(context.Background(), 'u', fmt.Sprint("payload ", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		select {
		case n := <-got:
			if n.kind != 'u' || n.payload != fmt.Sprint("payload ", i) {
				t.Fatalf("notification %d: %c %q", i, n.kind, n.payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("notification %d never came", i)
		}
	}
	select {
	case n := <-mine:
		t.Fatalf("the sender got its own notification %+v", n)
	case <-time.After(50 * time.Millisecond):
	}
}

// Once Run has returned the broker is done: not live, and its calls say
// nothing was done rather than "outcome unknown".
func TestNotLiveAfterRun(t *testing.T) {
	b := New(Options{Redis: srv.Options(), Prefix: srv.Prefix()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx, time.Hour, time.Hour, nil)
	}()
	for deadline := time.Now().Add(5 * time.Second); !b.Live(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not live")
		}
	}
	cancel()
	<-done
	if b.Live() {
		t.Fatal("live after Run returned")
	}
	if _, err := b.Publish(context.Background(), "x", broker.Publication{}, broker.PublishOptions{}); !errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrOutcomeUnknown) {
		t.Fatalf("publish after Run: %v, want ErrUnavailable only", err)
	}
}

// The caller's context reaches Redis: a call whose context is already done
// ends with ErrUnavailable and does nothing.
func TestCallerContextEndsTheCall(t *testing.T) {
	b := start(t, Options{Prefix: srv.Prefix()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Publish(ctx, "c", broker.Publication{Data: []byte(`1`)}, broker.PublishOptions{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish with a done context: %v, want ErrUnavailable", err)
	}
	if _, _, err := b.History(ctx, "c", broker.HistoryQuery{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("History with a done context: %v, want ErrUnavailable", err)
	}
	if err := b.Notify(ctx, 'u', "x"); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Notify with a done context: %v, want ErrUnavailable", err)
	}
	joined := false
	if err := b.Subscribe(ctx, "c", broker.SubscribeOptions{}, func(broker.Recovery) error { joined = true; return nil }); !errors.Is(err, broker.ErrUnavailable) || joined {
		t.Errorf("Subscribe with a done context: %v (joined %v), want ErrUnavailable", err, joined)
	}
	_, pos, err := b.History(context.Background(), "c", broker.HistoryQuery{})
	if err != nil || pos.Offset != 0 {
		t.Errorf("after the calls: offset %d, %v; want nothing published", pos.Offset, err)
	}
}

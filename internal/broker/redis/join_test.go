package redisbroker

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/broker/brokertest"
)

// Joins: a subscriber joins the live stream exactly where its replay ends, and
// a failed join leaves the node working.

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

// A join whose SUBSCRIBE hits a broken pub/sub connection fails, the loss
// is seen (go-redis would have replaced the connection inside the failed
// call, unseen, and without the channel), and the next join listens.
func TestJoinSubscribeOnABrokenConnection(t *testing.T) {
	var armed atomic.Bool
	o := wrapped(func(c net.Conn) net.Conn { return failingConn{Conn: c, armed: &armed} })
	lives := make(chan bool, 10)
	b := start(t, Options{Redis: o, Prefix: srv.Prefix(), Timeout: 2 * time.Second,
		Deliver: func(string, *broker.Publication) int { return 1 },
		OnLive:  func(live bool) { lives <- live }})
	<-lives // the first true
	armed.Store(true)
	join := func() error {
		return b.Subscribe(context.Background(), "broken", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil })
	}
	// The broken connection is a lost subscription: this join fails for
	// it (ErrUnavailable), as a client's subscribe would.
	if err := join(); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("join on a broken connection: %v, want ErrUnavailable", err)
	}
	if armed.Load() {
		t.Fatal("no SUBSCRIBE write failed: this test no longer shows a broken connection")
	}
	for _, want := range []bool{false, true} { // seen as lost, then live on a new connection
		select {
		case live := <-lives:
			if live != want {
				t.Fatalf("live %v, want %v", live, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no live=%v in 5s", want)
		}
	}
	// The client's next try listens.
	if err := join(); err != nil {
		t.Fatalf("join again: %v", err)
	}
	if r, err := b.Publish(context.Background(), "broken", broker.Publication{}, broker.PublishOptions{}); err != nil || r.Delivered != 1 {
		t.Fatalf("publish after the join: %+v %v", r, err)
	}
}

// A join that waited out its Timeout for subMu (behind a renew or a Sweep
// on a slow Redis) gives up without writing: a SUBSCRIBE with its expired
// deadline would make go-redis drop the connection every channel of the
// node shares, and every local subscriber would be closed with 4010.
func TestJoinPastItsDeadlineLeavesTheConnection(t *testing.T) {
	lost := make(chan bool, 10)
	b := start(t, Options{Prefix: srv.Prefix(), Timeout: 300 * time.Millisecond,
		OnLive: func(live bool) {
			if !live {
				lost <- true
			}
		}})
	b.subMu.Lock()
	joined := make(chan error, 1)
	go func() {
		joined <- b.Subscribe(context.Background(), "late", broker.SubscribeOptions{}, func(broker.Recovery) error { return nil })
	}()
	time.Sleep(500 * time.Millisecond)
	b.subMu.Unlock()
	if err := <-joined; !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("join past its deadline: %v, want ErrUnavailable", err)
	}
	select {
	case <-lost:
		t.Fatal("the pub/sub connection was lost to a join's expired deadline")
	case <-time.After(300 * time.Millisecond):
	}
	joinNow(t, b, "late") // and the channel is not stuck
}

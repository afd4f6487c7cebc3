package redisbroker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// Several nodes: publications and notifications reach every other node.

// Two nodes on one prefix, both with a subscriber: a publication on either
// reaches both, in order.
func TestPublicationsReachEveryNode(t *testing.T) {
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

// Notify reaches every other node, in the order sent, and not the sender.
func TestNotifyReachesEveryOtherNode(t *testing.T) {
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

// A notification this node received, still queued behind a slow Deliver
// when the pub/sub connection is lost, still reaches OnNotify: it came
// through whole, and no one would be told of its loss (a subscriber's 4010
// says nothing to a user whose disconnect or send it was). It used to be
// dropped with the publications of the lost subscription.
func TestNotificationQueuedAtALossIsKept(t *testing.T) {
	prefix := srv.Prefix()
	release := make(chan struct{})
	inDeliver := make(chan struct{}, 1)
	notes := make(chan string, 10)
	b := start(t, Options{Prefix: prefix, Workers: 1,
		Deliver: func(ch string, p *broker.Publication) int {
			select {
			case inDeliver <- struct{}{}:
				<-release
			default:
			}
			return 1
		},
		OnNotify: func(kind byte, payload string) { notes <- payload }})
	a := start(t, Options{Prefix: prefix})
	joinNow(t, b, "slow")
	if _, err := a.Publish(context.Background(), "slow", broker.Publication{}, broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	<-inDeliver // b's only worker is busy with that publication
	if err := a.Notify(context.Background(), 'd', "disconnect-user-x"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(b.queues[0]) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the notification never reached b's worker queue")
		}
	}
	g := b.gen.Load()
	c := srv.Client()
	defer c.Close()
	// Kill the pub/sub connections (a's too: it does not matter here).
	if err := c.Do(context.Background(), "client", "kill", "type", "pubsub", "skipme", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); b.gen.Load() == g; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("b did not see its loss")
		}
	}
	close(release)
	select {
	case p := <-notes:
		if p != "disconnect-user-x" {
			t.Fatalf("notification %q", p)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a notification b had received before its pub/sub connection was lost never reached OnNotify")
	}
}

package redisbroker

import (
	"context"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// A notification this node received, still queued behind a slow Deliver
// when the pub/sub connection is lost, still reaches OnNotify: it came
// through whole, and no one would be told of its loss (a subscriber's 4010
// says nothing to a user whose disconnect or send it was). It used to be
// dropped with the publications of the lost subscription.
func TestQueuedNotificationSurvivesALoss(t *testing.T) {
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

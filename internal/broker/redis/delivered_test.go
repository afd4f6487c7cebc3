package redisbroker

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// delayConn holds back the write that carries the marked publication.
type delayConn struct {
	net.Conn
	started chan struct{}
	once    *atomic.Bool
}

func (c delayConn) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("DELAYED-PUBLICATION")) && c.once.CompareAndSwap(false, true) {
		close(c.started)
		time.Sleep(time.Second)
	}
	return c.Conn.Write(p)
}

// A join on the same node that completes while a publish's script is on
// its way gets the publication (it comes after the join's marker), and the
// publish counts it: it used to decide not to wait for its echo before its
// script ran, and answered Delivered 0.
func TestDeliveredCountsAJoinDuringThePublish(t *testing.T) {
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

package redisbroker

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
)

// wrapped is the test Redis's options with every connection, pub/sub ones
// included, wrapped by wrap.
func wrapped(wrap func(net.Conn) net.Conn) *redis.Options {
	o := srv.Options()
	o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := new(net.Dialer).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return wrap(c), nil
	}
	return o
}

// failingConn fails (and closes) the first write that subscribes to a
// channel's stream once armed.
type failingConn struct {
	net.Conn
	armed *atomic.Bool
}

func (c failingConn) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("subscribe")) && bytes.Contains(p, []byte(":c:")) && c.armed.CompareAndSwap(true, false) {
		_ = c.Conn.Close()
		return 0, errors.New("test: connection broken under SUBSCRIBE")
	}
	return c.Conn.Write(p)
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

package redisbroker

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
)

// slowProxy forwards Unix-socket connections to Redis; once slow is set,
// the replies on connections made before it are held back by delay (a
// network hiccup on the connections in use).
type slowProxy struct {
	ln    net.Listener
	slow  atomic.Int64 // connections numbered below this are slow; 0: none
	count atomic.Int64
	fast  atomic.Int64 // connections numbered up to this are never slow
	delay time.Duration
	wg    sync.WaitGroup
}

func newSlowProxy(t *testing.T, target string, delay time.Duration) *slowProxy {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "proxy.sock"))
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln, delay: delay}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := p.count.Add(1)
			r, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(r, c); r.Close() }()
			go func() {
				defer p.wg.Done()
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					k, err := r.Read(buf)
					if k > 0 {
						if s := p.slow.Load(); s != 0 && n < s && n > p.fast.Load() {
							time.Sleep(p.delay)
						}
						if _, werr := c.Write(buf[:k]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return p
}

// A reply later than the client's read timeout is not retried: go-redis
// would send EVALSHA again on a new connection and Redis would run the
// publish script twice. The broker's pool has retries off, whatever the
// options it is given.
func TestSlowReplyPublishesOnce(t *testing.T) {
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

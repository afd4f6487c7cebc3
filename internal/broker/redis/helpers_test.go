package redisbroker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
)

// Helpers shared by the Redis broker's tests: a live broker, the listening state, connections and proxies that fail or delay on purpose, a Redis that persists.

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
	for deadline := time.Now().Add(30 * time.Second); !b.Live(); { // a failure bound for a loaded machine
		if time.Now().After(deadline) {
			t.Fatal("subscription not live after 30s")
		}
		time.Sleep(time.Millisecond)
	}
	return b
}

func numsub(t *testing.T, stream string) int64 {
	t.Helper()
	c := srv.Client()
	defer c.Close()
	n, err := c.PubSubNumSub(context.Background(), stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n[stream]
}

func joinNow(t *testing.T, b *Broker, channel string) {
	t.Helper()
	if err := b.Subscribe(context.Background(), channel, broker.SubscribeOptions{}, func(broker.Recovery) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// slowPublish gives channel ch a history of n entries to trim, so that the
// next publish with history size 10 keeps Redis busy for a while (as a
// lowered history_size, a busy Redis or a slow network do).
func slowPublish(t *testing.T, prefix, ch string, n int) broker.PublishOptions {
	t.Helper()
	ho := broker.PublishOptions{History: broker.HistoryOptions{Size: 10}}
	// The channel's first publication goes through a broker of the test
	// Redis's own options: the caller's may have a timeout too short for a
	// loaded machine.
	if _, err := start(t, Options{Prefix: prefix}).Publish(context.Background(), ch, broker.Publication{}, ho); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	entries := make([]any, 10000)
	for i := range entries {
		entries[i] = "1000000:1:0:0:"
	}
	for i := 0; i < n/len(entries); i++ {
		if err := c.LPush(context.Background(), prefix+":h:"+ch, entries...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Redis runs the slow script to its end: the next test starts once it
	// has, not against a Redis that answers BUSY.
	t.Cleanup(func() {
		c := srv.Client()
		defer c.Close()
		for deadline := time.Now().Add(2 * time.Minute); c.Ping(context.Background()).Err() != nil; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Error("the test Redis is still busy 2 minutes after the test")
				return
			}
		}
	})
	return ho
}

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

// persistentRedis runs a real redis-server that keeps its data in dir
// (an RDB file, as Redis does by default), so that it can be restarted as a
// crashed Redis is: with the state of its last snapshot. (redistest runs
// Redis without persistence and cannot restart one.)
func persistentRedis(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("redis-server", "--port", "0", "--unixsocket", filepath.Join(dir, "redis.sock"),
		"--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: filepath.Join(dir, "redis.sock")})
	defer c.Close()
	for deadline := time.Now().Add(5 * time.Second); c.Ping(context.Background()).Err() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not start")
		}
	}
	return cmd
}

package redisbroker

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
)

// Shutdown: Run ends, and the broker is done after it.

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

// A Redis that accepts the new pub/sub connection but never answers its
// handshake (a peer gone silent, as in a network partition) holds renew
// for Options.Timeout at most: Sweep (and a join) wait no longer behind it,
// and Run's shutdown ends. renew used to wait on Run's ctx, which has no
// deadline, and under subMu: forever with ReadTimeout -1.
func TestShutdownWhileRenewingOnASilentRedis(t *testing.T) {
	hole := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", hole)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never answered
			mu.Unlock()
		}
	}()
	var silent atomic.Bool
	o := srv.Options()
	o.ReadTimeout = -1 // no read deadline of its own: the broker bounds its calls with ctx
	o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if silent.Load() {
			addr = hole
		}
		return new(net.Dialer).DialContext(ctx, network, addr)
	}
	b := New(Options{Redis: o, Prefix: srv.Prefix(), Timeout: time.Second,
		Deliver: func(string, *broker.Publication) int { return 1 }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx, time.Hour, time.Hour, nil)
	}()
	defer func() { // let a stuck Run end once the test is over
		cancel()
		_ = ln.Close()
		mu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		mu.Unlock()
		<-done
	}()
	for deadline := time.Now().Add(5 * time.Second); !b.Live(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not live")
		}
	}
	joinNow(t, b, "a")
	silent.Store(true)
	c := srv.Client()
	defer c.Close()
	if err := c.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); b.Live(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("loss not seen")
		}
	}
	time.Sleep(300 * time.Millisecond) // renew is dialling the silent peer
	swept := make(chan struct{})
	go func() {
		b.Sweep(time.Hour, nil)
		close(swept)
	}()
	select {
	case <-swept:
	case <-time.After(3 * time.Second):
		t.Error("Sweep blocked for 3s (Timeout 1s) behind renew's handshake")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Run has not returned 3s after its ctx was cancelled: renew waits, under subMu, for a handshake answer that never comes")
	}
}

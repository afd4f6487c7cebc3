//go:build linux && !herald_portable

package netpoll

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/testnet"
)

// readinessDriven: this poller runs a handler only when its connection is
// readable.
const readinessDriven = true

// TestRunYieldsAfterEachBatch: a burst of readiness (a ping round's pongs)
// is handed out batch by batch, the poller yielding after each batch it
// dispatched, so that handlers run before more are started.
func TestRunYieldsAfterEachBatch(t *testing.T) {
	p, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	var yields, handled atomic.Int64
	p.yield = func() { yields.Add(1); runtime.Gosched() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		p.Close()
	}()

	const conns = 300
	var wg sync.WaitGroup
	var clients []*net.TCPConn
	for range conns {
		server, client := testnet.TCPPair(t)
		clients = append(clients, client)
		wg.Add(1)
		if _, err := p.Add(server, func(d *Desc) {
			handled.Add(1)
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	ok := make(chan struct{})
	go func() { wg.Wait(); close(ok) }()
	select {
	case <-ok:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d handlers ran", handled.Load(), conns)
	}
	// At most 256 events per batch: at least two batches, each followed by
	// a yield (the last one's may come just after its handlers ran).
	for deadline := time.Now().Add(10 * time.Second); yields.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the poller yielded %d times over %d events, want at least 2", yields.Load(), conns)
		}
	}
}

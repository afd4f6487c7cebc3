//go:build linux && !herald_portable

package hub

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/seccomptest"
)

// publishThroughDeniedEnter runs a hub whose writer pool wants io_uring in
// a process where io_uring_enter is refused — from the start (early) or
// once the workers have their rings — and checks that every subscriber
// gets every message, none is closed, no worker is left with a ring, and
// the log says why.
func publishThroughDeniedEnter(t *testing.T, early bool, wantLog string) {
	needRing(t, 1)
	if early {
		seccomptest.Deny(t, unix.SYS_IO_URING_ENTER)
	}
	logs, err := os.CreateTemp(t.TempDir(), "log") // an *os.File takes concurrent writes
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	m := metrics.New()
	h := New(Options{QueueBytes: 1 << 20, PingInterval: time.Minute, PongTimeout: 2 * time.Minute, IOUring: true},
		slog.New(slog.NewTextHandler(logs, nil)), m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	workers := float64(max(2, runtime.GOMAXPROCS(0)))
	deadline := time.Now().Add(5 * time.Second)
	for !early && metricValue(t, m.UringWorkers) != workers { // the workers have their rings
		if time.Now().After(deadline) {
			t.Fatalf("%v workers with a ring, want %v", metricValue(t, m.UringWorkers), workers)
		}
		time.Sleep(time.Millisecond)
	}
	if !early {
		seccomptest.Deny(t, unix.SYS_IO_URING_ENTER)
	}
	peers, clients := subscribePeers(t, h, "ch", 50)
	want := publishNumbered(h, "ch", 20)
	for _, p := range peers {
		readExactly(t, p, want)
	}
	for _, c := range clients {
		if c.Closing() {
			t.Fatalf("client %s was closed", c.ID)
		}
	}
	if got := h.writers.batched.Load(); got != 0 {
		t.Fatalf("%d clients counted as written through io_uring", got)
	}
	for metricValue(t, m.UringWorkers) != 0 { // a worker that has not written yet keeps its ring
		h.Publish("ch", NewFrame(fmt.Appendf(NewFrameBuffer(8), "more")), nil, "")
		if time.Now().After(deadline) {
			t.Fatalf("%v workers still have a ring", metricValue(t, m.UringWorkers))
		}
		time.Sleep(time.Millisecond)
	}
	if out, err := os.ReadFile(logs.Name()); err != nil || !strings.Contains(string(out), wantLog) {
		t.Fatalf("log lacks %q (%v):\n%s", wantLog, err, out)
	}
}

// TestWriterPoolEnterDeniedAtStart: a seccomp profile that lets io_uring
// rings be made but refuses io_uring_enter, as some container runtimes'
// might: the workers find it out when they start and write with writev.
func TestWriterPoolEnterDeniedAtStart(t *testing.T) {
	if !seccomptest.Child(t) {
		seccomptest.Run(t)
		return
	}
	publishThroughDeniedEnter(t, true, "io_uring unavailable, one writev per client")
}

// TestWriterPoolEnterDeniedLater: io_uring_enter refused after the workers
// made their rings (the same profile applied late, standing in for any
// refusal that is not for want of memory): the first batches are written
// with writev, nobody is closed, and the workers drop their rings.
func TestWriterPoolEnterDeniedLater(t *testing.T) {
	if !seccomptest.Child(t) {
		seccomptest.Run(t)
		return
	}
	publishThroughDeniedEnter(t, false, "io_uring failed, one writev per client from now on")
}

// TestBatchWriterEnterDeniedMidFlush: a flush long enough for several
// submissions whose first one finds io_uring_enter refused writes that
// one's clients and all the rest with writev: every peer reads its frames,
// the ring wrote none, and the writer reports the ring broken.
func TestBatchWriterEnterDeniedMidFlush(t *testing.T) {
	if !seccomptest.Child(t) {
		seccomptest.Run(t)
		return
	}
	h := newTestHub(64 << 20)
	bw := newBatchWriter(needRing(t, 64), newWritev(), &h.writers.batched)
	seccomptest.Deny(t, unix.SYS_IO_URING_ENTER)
	const clients, frames = 20, maxBatchIovecs // at least 4 submissions' worth
	cs, peers, wants := queuedClients(t, h, clients, frames)
	bw.flush(cs, func() {})
	for i, p := range peers {
		readExactly(t, p, wants[i])
	}
	if bw.broken == nil {
		t.Fatal("the refused submission did not mark the ring broken")
	}
	if got := h.writers.batched.Load(); got != 0 {
		t.Fatalf("%d clients counted as written by the ring", got)
	}
	for _, c := range cs {
		if c.Closing() {
			t.Fatalf("client %s was closed", c.ID)
		}
	}
}

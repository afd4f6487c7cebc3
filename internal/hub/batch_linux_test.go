//go:build linux && !herald_portable

package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/testnet"
	"github.com/herald-rt/herald/internal/uring"
)

// needRing returns a ring, skipping the test where the kernel gives none —
// unless HERALD_REQUIRE_IO_URING is set, as CI sets it on its machine, which
// has io_uring: there a missing ring fails the test.
func needRing(t *testing.T, entries int) *uring.Ring {
	t.Helper()
	r, err := uring.New(entries)
	if errors.Is(err, uring.ErrUnsupported) && os.Getenv("HERALD_REQUIRE_IO_URING") == "" {
		t.Skipf("no io_uring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// metricValue is a counter's or a gauge's value.
func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func newUringHub(t *testing.T, queue int) *Hub {
	needRing(t, 1)
	return New(Options{QueueBytes: queue, PingInterval: time.Minute, PongTimeout: 2 * time.Minute, IOUring: true},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
}

// TestWriterPoolYieldsIOURing: with io_uring a worker yields after the batch
// in which its count of flushes reaches yieldEvery, so at least every
// yieldEvery + batchClients - 1 flushes.
func TestWriterPoolYieldsIOURing(t *testing.T) {
	testWriterPoolYields(t, newUringHub(t, 1<<20), yieldEvery+batchClients-1)
}

// queueDirect puts frames in c's queue and gives the caller c's writer role,
// as Send does before it schedules c.
func queueDirect(c *Client, frames ...[]byte) {
	c.mu.Lock()
	for _, f := range frames {
		c.queue = append(c.queue, f)
		c.queuedBytes += len(f)
	}
	c.writing = true
	c.mu.Unlock()
}

func readExactly(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %d bytes: %v", len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// TestBatchWriterWritesEachClientItsOwn: one batch of clients, each with one
// to three frames (one send or a sendmsg), several clients sharing a socket:
// every peer reads exactly its clients' frames, in order, and the writer
// role is given back.
func TestBatchWriterWritesEachClientItsOwn(t *testing.T) {
	h := newTestHub(1 << 20)
	bw := newBatchWriter(needRing(t, 64), newWritev(), &h.writers.batched)
	const socks = 20
	type sock struct {
		srv, peer *net.TCPConn
		want      []byte
	}
	ss := make([]*sock, socks)
	for i := range ss {
		srv, peer := testnet.TCPPair(t)
		ss[i] = &sock{srv: srv, peer: peer}
	}
	var clients []*Client
	var wantMessages, wantBytes int
	for i := range 50 {
		s := ss[i%socks]
		c := h.NewClient(s.srv, ClientOptions{ID: fmt.Sprint(i)})
		var frames [][]byte
		for j := range 1 + i%3 {
			f := TextFrame(fmt.Appendf(nil, "client %d frame %d", i, j))
			frames = append(frames, f)
			s.want = append(s.want, f...)
		}
		if i%7 == 0 {
			frames = append(frames, nil) // an empty buffer in the queue is skipped
		}
		queueDirect(c, frames...)
		wantMessages += len(frames)
		wantBytes += batchLen(frames)
		clients = append(clients, c)
	}
	bw.flush(clients, runtime.Gosched)
	// The batch reports to the metrics once, with every client's part.
	if m, b := metricValue(t, h.metrics.MessagesOut), metricValue(t, h.metrics.BytesOut); int(m) != wantMessages || int(b) != wantBytes {
		t.Fatalf("metrics: %v messages and %v bytes out, want %d and %d", m, b, wantMessages, wantBytes)
	}
	for _, s := range ss {
		readExactly(t, s.peer, s.want)
	}
	for _, c := range clients {
		c.mu.Lock()
		writing, queued := c.writing, len(c.queue)
		c.mu.Unlock()
		if writing || queued != 0 {
			t.Fatalf("client %s: writing %v, %d queued after the batch", c.ID, writing, queued)
		}
	}
	if got := h.writers.batched.Load(); got != 50 {
		t.Fatalf("%d clients written through the ring, want 50", got)
	}
	if len(bw.iovs) != 0 || len(bw.clients) != 0 {
		t.Fatal("the batch writer kept references after the batch")
	}
}

// TestBatchWriterFullSocket: a client whose socket cannot take its queue
// finishes in blocking mode on a goroutine of its own, losing and
// reordering nothing, while the other clients of the batch are written at
// once.
func TestBatchWriterFullSocket(t *testing.T) {
	h := newTestHub(64 << 20)
	bw := newBatchWriter(needRing(t, 8), newWritev(), &h.writers.batched)
	slowSrv, slowPeer := testnet.TCPPair(t)
	_ = slowSrv.SetWriteBuffer(64 << 10)
	_ = slowPeer.SetReadBuffer(64 << 10)
	fastSrv, fastPeer := testnet.TCPPair(t)
	slow := h.NewClient(slowSrv, ClientOptions{ID: "slow"})
	fast := h.NewClient(fastSrv, ClientOptions{ID: "fast"})
	var want []byte
	var frames [][]byte
	for i := range maxBatchIovecs {
		f := TextFrame(append(fmt.Appendf(nil, "%04d", i), bytes.Repeat([]byte{'s'}, 64<<10)...))
		frames = append(frames, f)
		want = append(want, f...)
	}
	queueDirect(slow, frames...)
	hello := TextFrame([]byte("hello"))
	queueDirect(fast, hello)
	bw.flush([]*Client{slow, fast}, runtime.Gosched) // returns: it never waits for a socket
	slow.mu.Lock()
	writing := slow.writing
	slow.mu.Unlock()
	if !writing {
		t.Fatal("the slow client's queue is written, though its peer reads nothing")
	}
	readExactly(t, fastPeer, hello)
	readExactly(t, slowPeer, want)
}

// TestBatchWriterClosedConnection: a client whose connection was closed
// before the batch is ended (its descriptor cannot be held, so nothing is
// written to its number, which a new socket may have taken), and the
// others are written.
func TestBatchWriterClosedConnection(t *testing.T) {
	h := newTestHub(1 << 20)
	bw := newBatchWriter(needRing(t, 8), newWritev(), &h.writers.batched)
	deadSrv, _ := testnet.TCPPair(t)
	okSrv, okPeer := testnet.TCPPair(t)
	dead := h.NewClient(deadSrv, ClientOptions{ID: "dead"})
	ok := h.NewClient(okSrv, ClientOptions{ID: "ok"})
	_ = deadSrv.Close()
	queueDirect(dead, TextFrame([]byte("lost")))
	f := TextFrame([]byte("kept"))
	queueDirect(ok, f)
	bw.flush([]*Client{dead, ok}, runtime.Gosched)
	readExactly(t, okPeer, f)
	select {
	case <-dead.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client with a closed connection was not ended")
	}
}

// TestBatchWriterManyFrames: a client with more frames queued than a
// batched write takes is written with writev instead, in order.
func TestBatchWriterManyFrames(t *testing.T) {
	h := newTestHub(64 << 20)
	bw := newBatchWriter(needRing(t, 8), newWritev(), &h.writers.batched)
	srv, peer := testnet.TCPPair(t)
	c := h.NewClient(srv, ClientOptions{ID: "many"})
	var want []byte
	var frames [][]byte
	for i := range 3 * maxBatchIovecs {
		f := TextFrame(fmt.Appendf(nil, "%05d", i))
		frames = append(frames, f)
		want = append(want, f...)
	}
	queueDirect(c, frames...)
	bw.flush([]*Client{c}, runtime.Gosched)
	readExactly(t, peer, want)
	if got := h.writers.batched.Load(); got != 0 {
		t.Fatalf("%d clients went through the ring, want 0", got)
	}
}

// TestPublishWithIOUring: a running hub with io_uring on delivers every
// publication to every subscriber in order, through the ring.
func TestPublishWithIOUring(t *testing.T) {
	h := newUringHub(t, 1<<20)
	runHub(t, h)
	peers, _ := subscribePeers(t, h, "ch", 100)
	want := publishNumbered(h, "ch", 20)
	for _, p := range peers {
		readExactly(t, p, want)
	}
	if h.writers.batched.Load() == 0 {
		t.Fatal("no client was written through io_uring")
	}
}

// subscribePeers registers n clients on loopback connections and
// subscribes them to channel; it returns their peers and the clients.
func subscribePeers(t *testing.T, h *Hub, channel string, n int) ([]*net.TCPConn, []*Client) {
	t.Helper()
	var peers []*net.TCPConn
	var clients []*Client
	for i := range n {
		srv, peer := testnet.TCPPair(t)
		c := h.NewClient(srv, ClientOptions{ID: fmt.Sprint(i), UserID: fmt.Sprint(i)})
		if err := h.Register(c); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Subscribe(c, channel, nil); err != nil {
			t.Fatal(err)
		}
		peers, clients = append(peers, peer), append(clients, c)
	}
	return peers, clients
}

// publishNumbered publishes msgs messages "00000", "00001", … to channel
// and returns the frames each subscriber should read.
func publishNumbered(h *Hub, channel string, msgs int) []byte {
	var want []byte
	for i := range msgs {
		want = append(want, TextFrame(fmt.Appendf(nil, "%05d", i))...)
		h.Publish(channel, NewFrame(fmt.Appendf(NewFrameBuffer(8), "%05d", i)), nil, "")
	}
	return want
}

// BenchmarkFlush writes one 100-byte frame to each of 128 clients, each on
// its own loopback socket drained by a reader, as a writer-pool worker does
// in a fan-out: one writev per client, or one io_uring submission for all.
// ns/delivery is the figure to compare (the readers share the CPU).
func BenchmarkFlush(b *testing.B) {
	setup := func(b *testing.B) (*Hub, []*Client) {
		h := newTestHub(1 << 20)
		var cs []*Client
		for i := range batchClients {
			sc, peer := testnet.TCPPair(b)
			go func() { _, _ = io.Copy(io.Discard, peer) }()
			cs = append(cs, h.NewClient(sc, ClientOptions{ID: fmt.Sprint(i)}))
		}
		return h, cs
	}
	frame := TextFrame(bytes.Repeat([]byte("x"), 100))
	run := func(b *testing.B, cs []*Client, flush func()) {
		b.ReportAllocs()
		for b.Loop() {
			for _, c := range cs {
				queueDirect(c, frame)
			}
			flush()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(cs)), "ns/delivery")
	}
	b.Run("writev", func(b *testing.B) {
		_, cs := setup(b)
		w := newWritev()
		run(b, cs, func() {
			for _, c := range cs {
				c.flushOnce(w)
			}
		})
	})
	b.Run("io_uring", func(b *testing.B) {
		h, cs := setup(b)
		r, err := uring.New(batchClients)
		if err != nil {
			b.Skip(err)
		}
		defer r.Close()
		bw := newBatchWriter(r, newWritev(), &h.writers.batched)
		run(b, cs, func() { bw.flush(cs, runtime.Gosched) })
	})
}

// TestBatchWriterWritevOne: the fallback for requests the kernel refused
// gives the ring's results: bytes written, -EAGAIN for a full socket, a
// negated errno for a dead one.
func TestBatchWriterWritevOne(t *testing.T) {
	h := newTestHub(1 << 20)
	bw := newBatchWriter(needRing(t, 4), newWritev(), &h.writers.batched)
	fd := func(c *net.TCPConn) int { return testnet.FD(t, c) }
	srv, peer := testnet.TCPPair(t)
	frames := [][]byte{TextFrame([]byte("one")), nil, TextFrame([]byte("two"))}
	if r := bw.writevOne(fd(srv), frames); int(r) != batchLen(frames) {
		t.Fatalf("result %d, want %d", r, batchLen(frames))
	}
	readExactly(t, peer, append(append([]byte{}, frames[0]...), frames[2]...))

	full, _ := testnet.TCPPair(t)
	chunk := [][]byte{make([]byte, 1<<16)}
	for i := 0; ; i++ {
		r := bw.writevOne(fd(full), chunk)
		if r == -int32(syscall.EAGAIN) {
			break
		}
		if r <= 0 || i > 10000 {
			t.Fatalf("filling: result %d after %d writes", r, i)
		}
	}

	dead, deadPeer := testnet.TCPPair(t)
	_ = deadPeer.SetLinger(0)
	_ = deadPeer.Close()
	time.Sleep(50 * time.Millisecond)
	if r := bw.writevOne(fd(dead), frames); r != -int32(syscall.EPIPE) && r != -int32(syscall.ECONNRESET) {
		t.Fatalf("dead socket: result %d", r)
	}
	if len(bw.w.iov) != 0 && bw.w.iov[0].Base != nil {
		t.Fatal("the write state kept a frame")
	}
}

// TestTryWritevEmptyBuffers: empty buffers in a batch take no iovec, and the
// frames after them are written once. (The writev loop used to advance by
// the iovecs it made, not the buffers it covered, and wrote the frame after
// an empty buffer twice.)
func TestTryWritevEmptyBuffers(t *testing.T) {
	srv, peer := testnet.TCPPair(t)
	c := newTestHub(1<<20).NewClient(srv, ClientOptions{ID: "c"})
	a, b := TextFrame([]byte("a")), TextFrame([]byte("b"))
	batch := [][]byte{nil, a, nil, nil, b, nil}
	n, done, err := c.tryWritev(newWritev(), batch)
	if err != nil || !done || n != len(a)+len(b) {
		t.Fatalf("tryWritev = %d, %v, %v; want %d, true, nil", n, done, err, len(a)+len(b))
	}
	readExactly(t, peer, append(append([]byte{}, a...), b...))
	_ = peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if m, _ := peer.Read(make([]byte, 1)); m != 0 {
		t.Fatal("more than the two frames arrived")
	}
}

// TestBatchWriterFrameBudget: clients with many frames each are written a
// few at a time, the worker yielding between submissions, and every frame
// arrives once, in order.
func TestBatchWriterFrameBudget(t *testing.T) {
	h := newTestHub(64 << 20)
	bw := newBatchWriter(needRing(t, 64), newWritev(), &h.writers.batched)
	const clients, frames = 20, maxBatchIovecs // 1280 frames: at least 4 submissions
	cs, peers, wants := queuedClients(t, h, clients, frames)
	yields := 0
	bw.flush(cs, func() { yields++ })
	if least := clients*frames/frameBudget - 1; yields < least {
		t.Fatalf("%d yields over %d frames, want at least %d", yields, clients*frames, least)
	}
	for i, p := range peers {
		readExactly(t, p, wants[i])
	}
	if got := h.writers.batched.Load(); got != clients {
		t.Fatalf("%d clients went through the ring, want %d", got, clients)
	}
}

// queuedClients makes n clients on loopback connections, each holding the
// writer role with frames frames queued; it returns them, their peers and
// what each peer should read.
func queuedClients(t *testing.T, h *Hub, n, frames int) (cs []*Client, peers []*net.TCPConn, wants [][]byte) {
	t.Helper()
	for i := range n {
		srv, peer := testnet.TCPPair(t)
		c := h.NewClient(srv, ClientOptions{ID: fmt.Sprint(i)})
		var want []byte
		var fs [][]byte
		for j := range frames {
			f := TextFrame(fmt.Appendf(nil, "%d/%d", i, j))
			fs = append(fs, f)
			want = append(want, f...)
		}
		queueDirect(c, fs...)
		cs, peers, wants = append(cs, c), append(peers, peer), append(wants, want)
	}
	return cs, peers, wants
}

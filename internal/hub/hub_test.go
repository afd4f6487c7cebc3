package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/budget"
	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/testnet"
)

// countConn is a net.Conn that counts what is written to it.
type countConn struct {
	net.Conn
	bytes  atomic.Int64
	writes atomic.Int64
	block  chan struct{} // when non-nil, writes wait on it
}

func (c *countConn) Write(b []byte) (int, error) {
	if c.block != nil {
		<-c.block
	}
	c.writes.Add(1)
	c.bytes.Add(int64(len(b)))
	return len(b), nil
}
func (c *countConn) Close() error                     { return nil }
func (c *countConn) SetWriteDeadline(time.Time) error { return nil }
func (c *countConn) SetReadDeadline(time.Time) error  { return nil }

func (c *Client) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queuedBytes
}

func newTestHub(queue int) *Hub {
	return New(Options{QueueBytes: queue, PingInterval: time.Minute, PongTimeout: 2 * time.Minute},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
}

func TestPublishNeverBlocksOnSlowClient(t *testing.T) {
	h := newTestHub(10 << 10)
	stuck := &countConn{block: make(chan struct{})}
	defer close(stuck.block)
	slow := h.NewClient(stuck, ClientOptions{ID: "slow", UserID: "s"})
	fast := h.NewClient(&countConn{}, ClientOptions{ID: "fast", UserID: "f"})
	for _, c := range []*Client{slow, fast} {
		if err := h.Register(c); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Subscribe(c, "ch", nil); err != nil {
			t.Fatal(err)
		}
	}
	frame := NewFrame(append(NewFrameBuffer(1000), bytes.Repeat([]byte{'x'}, 1000)...))
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			h.Publish("ch", frame, nil, "")
			// Let the healthy writer drain so only the stuck client overflows.
			for fast.pending() > 0 {
				time.Sleep(time.Millisecond)
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publisher blocked by a stuck client")
	}
	if !slow.Closing() {
		t.Fatal("stuck client not closed as slow consumer")
	}
	if fast.Closing() {
		t.Fatal("healthy client closed")
	}
	// The slow client leaves every channel.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := h.Stats(true)
		if len(st.Channels) == 1 && st.Channels[0].Subscribers == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSubscribeAfterCloseRefused(t *testing.T) {
	h := newTestHub(1 << 20)
	c := h.NewClient(&countConn{}, ClientOptions{ID: "c", UserID: "u"})
	_ = h.Register(c)
	c.Gone(1000)
	if _, err := h.Subscribe(c, "x", nil); err != ErrClientClosing {
		t.Fatalf("subscribe after gone: %v", err)
	}
	if st := h.Stats(true); st.Clients != 0 || len(st.Channels) != 0 || st.Users != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConcurrentSubscribeAndGoneLeavesNothing(t *testing.T) {
	h := newTestHub(1 << 20)
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		c := h.NewClient(&countConn{}, ClientOptions{ID: fmt.Sprint(i), UserID: fmt.Sprint(i % 7)})
		_ = h.Register(c)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				_, _ = h.Subscribe(c, fmt.Sprint("ch", j), nil)
			}
		}()
		go func() { defer wg.Done(); c.Gone(0) }()
	}
	wg.Wait()
	if st := h.Stats(true); st.Clients != 0 || len(st.Channels) != 0 || st.Subscriptions != 0 || st.Users != 0 {
		t.Fatalf("leaked state: %+v", st)
	}
}

// BenchmarkFanout measures queueing one encoded publication to N subscribers
// and draining it through per-client writer goroutines (no Run).
func BenchmarkFanout(b *testing.B) { benchmarkFanout(b, []int{100, 1000, 10000}, false, nil) }

// BenchmarkFanoutWriterPool is BenchmarkFanout with the writer pool running
// (as in the server): workers flush clients' queues.
func BenchmarkFanoutWriterPool(b *testing.B) { benchmarkFanout(b, []int{1000, 10000}, true, nil) }

// BenchmarkFanoutBudget is BenchmarkFanoutWriterPool with every client's
// queue counted in a memory budget (as in the server).
func BenchmarkFanoutBudget(b *testing.B) {
	benchmarkFanout(b, []int{1000, 10000}, true, budget.New(1<<40, 1<<40))
}

func benchmarkFanout(b *testing.B, sizes []int, pool bool, bud *budget.Budget) {
	for _, n := range sizes {
		b.Run(fmt.Sprint("subs=", n), func(b *testing.B) {
			h := newTestHub(1 << 20)
			if pool {
				runHub(b, h)
			}
			for i := range n {
				o := ClientOptions{ID: fmt.Sprint(i), UserID: fmt.Sprint(i)}
				if bud != nil {
					o.Budget = bud.User(o.UserID)
				}
				c := h.NewClient(&countConn{}, o)
				_ = h.Register(c)
				_, _ = h.Subscribe(c, "bench", nil)
			}
			frame := NewFrame(append(NewFrameBuffer(100), bytes.Repeat([]byte{'x'}, 100)...))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.Publish("bench", frame, nil, "")
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

func BenchmarkSubscribeUnsubscribe(b *testing.B) {
	h := newTestHub(1 << 20)
	c := h.NewClient(&countConn{}, ClientOptions{ID: "c", UserID: "u"})
	_ = h.Register(c)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = h.Subscribe(c, "chan", nil)
		h.Unsubscribe(c, "chan")
	}
}

// TestWriterPoolDeliversInOrder runs the hub with its writer pool (Run) and
// checks that many publications reach many clients complete and in order.
func TestWriterPoolDeliversInOrder(t *testing.T) {
	h := newTestHub(1 << 20)
	runHub(t, h)
	const clients, msgs = 50, 200
	var pairs []net.Conn
	for i := range clients {
		a, b := net.Pipe()
		pairs = append(pairs, b)
		c := h.NewClient(a, ClientOptions{ID: fmt.Sprint(i), UserID: fmt.Sprint(i)})
		_ = h.Register(c)
		_, _ = h.Subscribe(c, "ch", nil)
	}
	var wg sync.WaitGroup
	for _, b := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := make([]byte, 0, msgs*8)
			for i := range msgs {
				want = append(want, TextFrame(fmt.Appendf(nil, "%05d", i))...)
			}
			got := make([]byte, len(want))
			if _, err := io.ReadFull(b, got); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(got, want) {
				t.Error("frames out of order or corrupted")
			}
		}()
	}
	for i := range msgs {
		h.Publish("ch", NewFrame(fmt.Appendf(NewFrameBuffer(8), "%05d", i)), nil, "")
	}
	wg.Wait()
}

// TestWriterPoolYields: a worker flushing one client after another over real
// sockets yields to other goroutines every yieldEvery flushes, since its raw
// writes never hand its P to the runtime. (TestWriterPoolYieldsIOURing does
// the same with io_uring.)
func TestWriterPoolYields(t *testing.T) {
	testWriterPoolYields(t, newTestHub(1<<20), yieldEvery)
}

// testWriterPoolYields expects a yield at least every per flushes.
func testWriterPoolYields(t *testing.T, h *Hub, per int) {
	var yields atomic.Int64
	h.writers.yield = func() { yields.Add(1); runtime.Gosched() }
	runHub(t, h)

	// Each of the (at least two) workers yields after every per of its
	// own flushes, so at least 8 yields over these.
	workers := max(2, runtime.GOMAXPROCS(0))
	const socks = 4
	clients := (workers + 8) * per
	var conns []*net.TCPConn
	for range socks {
		sc, peer := testnet.TCPPair(t)
		conns = append(conns, sc)
		go func() { _, _ = io.Copy(io.Discard, peer) }()
	}
	var cs []*Client
	for i := range clients {
		c := h.NewClient(conns[i%socks], ClientOptions{ID: fmt.Sprint(i), UserID: fmt.Sprint(i)})
		_ = h.Register(c)
		cs = append(cs, c)
	}
	for _, c := range cs {
		c.Send(TextFrame([]byte("x")))
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range cs {
		for c.pending() > 0 {
			if time.Now().After(deadline) {
				t.Fatal("queued frames were not written")
			}
			time.Sleep(time.Millisecond)
		}
	}
	if got, want := yields.Load(), int64(clients/per-workers); got < want {
		t.Fatalf("workers yielded %d times over %d flushes, want at least %d", got, clients, want)
	}
}

// gateConn records what is written to it, in order; its first write waits
// until release is closed, after signalling started.
type gateConn struct {
	net.Conn
	started, release chan struct{}
	once             sync.Once
	mu               sync.Mutex
	buf              bytes.Buffer
}

func (c *gateConn) Write(b []byte) (int, error) {
	c.once.Do(func() { close(c.started); <-c.release })
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(b)
}
func (c *gateConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}
func (c *gateConn) Close() error                     { return nil }
func (c *gateConn) SetWriteDeadline(time.Time) error { return nil }
func (c *gateConn) SetReadDeadline(time.Time) error  { return nil }

// TestGreetRegistersFirst: while the greeting (handshake response and first
// message) is still being written, the client is already registered — a
// client that has read its connected message can be reached — and what is
// sent to it meanwhile goes out after the greeting, never before it.
func TestGreetRegistersFirst(t *testing.T) {
	h := newTestHub(1 << 20)
	gc := &gateConn{started: make(chan struct{}), release: make(chan struct{})}
	c := h.NewClient(gc, ClientOptions{ID: "c1", UserID: "u"})
	prefix := []byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")
	connected := TextFrame([]byte(`{"type":"connected"}`))
	errc := make(chan error, 1)
	go func() { errc <- c.Greet(prefix, connected, nil) }()
	<-gc.started
	payload := []byte(`{"type":"message","data":1}`)
	if n := h.SendToUser("u", NewFrame(append(NewFrameBuffer(len(payload)), payload...))); n != 1 {
		t.Fatalf("sent to %d clients during the greeting, want 1 (registered)", n)
	}
	close(gc.release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(prefix, connected, TextFrame(payload))
	deadline := time.Now().Add(2 * time.Second)
	for !bytes.Equal(gc.written(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("wrote %q, want %q", gc.written(), want)
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Greet(prefix, connected, nil); err == nil {
		t.Fatal("a second Greet succeeded")
	}
}

// TestGreetSetup: Greet's setup runs once the client is registered and
// before the greeting is written; what it queues (a subscription's reply)
// and what reaches the client meanwhile go out right after the greeting.
func TestGreetSetup(t *testing.T) {
	h := newTestHub(1 << 20)
	srv, peer := testnet.TCPPair(t)
	c := h.NewClient(srv, ClientOptions{ID: "c1", UserID: "u"})
	prefix := []byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")
	connected := TextFrame([]byte(`{"type":"connected"}`))
	reply := TextFrame([]byte(`{"type":"subscribed","channel":"a"}`))
	pushed := []byte(`{"type":"message","data":1}`)
	ran := false
	err := c.Greet(prefix, connected, func() {
		ran = true
		if n := h.SendToUser("u", NewFrame(append(NewFrameBuffer(len(pushed)), pushed...))); n != 1 {
			t.Errorf("sent to %d clients during setup, want 1 (registered)", n)
		}
		c.Send(reply)
	})
	if err != nil || !ran {
		t.Fatalf("Greet: %v (setup ran: %v)", err, ran)
	}
	want := slices.Concat(prefix, connected, TextFrame(pushed), reply)
	got := make([]byte, len(want))
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("peer read %q, %v; want %q", got, err, want)
	}
}

// TestGreetLargerThanSocketBuffer: a greeting the socket cannot take in one
// non-blocking writev is finished in blocking mode, whole and in order, over
// a real loopback TCP connection whose peer starts reading late. (The peer's
// receive buffer is left as it is: a tiny one stalls loopback TCP itself.)
func TestGreetLargerThanSocketBuffer(t *testing.T) {
	sc, peer := testnet.TCPPair(t)
	_ = sc.SetWriteBuffer(4096)

	h := newTestHub(1 << 20)
	c := h.NewClient(sc, ClientOptions{ID: "c1", UserID: "u"})
	defer c.Gone(0)
	prefix := bytes.Repeat([]byte("h"), 3000)
	payload := bytes.Repeat([]byte("p"), 4<<20)
	connected := TextFrame(payload)
	errc := make(chan error, 1)
	go func() { errc <- c.Greet(prefix, connected, nil) }()
	select {
	case err := <-errc:
		t.Fatalf("Greet returned (%v) before the peer read 4 MiB", err)
	case <-time.After(100 * time.Millisecond):
	}
	want := slices.Concat(prefix, connected)
	got := make([]byte, len(want))
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("read %d of %d bytes: %v", n, len(want), err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the greeting arrived altered")
	}
}

// BenchmarkTryWritev: one non-blocking writev of a queued frame to a real
// loopback socket whose peer drains it, as a writer-pool worker does per
// client; it allocates nothing.
func BenchmarkTryWritev(b *testing.B) {
	sc, peer := testnet.TCPPair(b)
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	c := newTestHub(1<<20).NewClient(sc, ClientOptions{ID: "c1", UserID: "u"})
	defer c.Gone(0)
	w := newWritev()
	batch := [][]byte{TextFrame(bytes.Repeat([]byte("x"), 100))}
	b.ReportAllocs()
	for b.Loop() {
		if _, done, err := c.tryWritev(w, batch); err != nil {
			b.Fatal(err)
		} else if !done {
			time.Sleep(time.Millisecond) // let the peer drain
		}
	}
}

// runHub runs h until the test ends, and returns once its writer pool takes
// clients. Until then Send hands each client a goroutine of its own, so a
// test of the pool that sent at once could find no work done by the pool
// (as TestWriterPoolYields once did, under load).
func runHub(t testing.TB, h *Hub) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		h.writers.mu.Lock()
		running := h.writers.running
		h.writers.mu.Unlock()
		if running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the hub's writer pool did not start")
		}
	}
}

// TestConnectionLimits: Register refuses past MaxConnections and past
// MaxUserConnections, a refused client leaves no trace, and a client that
// leaves frees its place for the next.
func TestConnectionLimits(t *testing.T) {
	h := New(Options{QueueBytes: 1 << 20, PingInterval: time.Minute, PongTimeout: 2 * time.Minute, MaxConnections: 3, MaxUserConnections: 2},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	newClient := func(id, user string) *Client { return h.NewClient(&countConn{}, ClientOptions{ID: id, UserID: user}) }
	a1, a2 := newClient("a1", "alice"), newClient("a2", "alice")
	for _, c := range []*Client{a1, a2} {
		if err := h.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Register(newClient("a3", "alice")); !errors.Is(err, ErrUserFull) {
		t.Fatalf("alice's third connection: %v, want ErrUserFull", err)
	}
	if err := h.Register(newClient("b1", "bob")); err != nil {
		t.Fatalf("bob's first connection: %v", err)
	}
	if err := h.Register(newClient("c1", "carol")); !errors.Is(err, ErrServerFull) {
		t.Fatalf("a fourth connection: %v, want ErrServerFull", err)
	}
	if st := h.Stats(false); st.Clients != 3 || st.Users != 2 || h.NumClients() != 3 {
		t.Fatalf("after refusals: %+v, NumClients %d", st, h.NumClients())
	}
	if h.Client("a3") != nil || h.Client("c1") != nil {
		t.Fatal("a refused client is registered")
	}
	a1.Gone(1000)
	if err := h.Register(newClient("c2", "carol")); err != nil {
		t.Fatalf("after one left: %v", err)
	}
	if err := h.Register(newClient("a4", "alice")); !errors.Is(err, ErrServerFull) {
		t.Fatalf("full again: %v, want ErrServerFull", err)
	}
}

// TestConnectionLimitsConcurrent: many registrations at once never pass
// either bound.
func TestConnectionLimitsConcurrent(t *testing.T) {
	const maxConns, perUser, users, tries = 50, 4, 30, 400
	h := New(Options{QueueBytes: 1 << 20, PingInterval: time.Minute, PongTimeout: 2 * time.Minute, MaxConnections: maxConns, MaxUserConnections: perUser},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	var wg sync.WaitGroup
	var admitted atomic.Int64
	perUserAdmitted := make([]atomic.Int64, users)
	for i := range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := i % users
			c := h.NewClient(&countConn{}, ClientOptions{ID: fmt.Sprint(i), UserID: fmt.Sprint("u", u)})
			if h.Register(c) == nil {
				admitted.Add(1)
				perUserAdmitted[u].Add(1)
			}
		}()
	}
	wg.Wait()
	if n := admitted.Load(); n != maxConns || h.NumClients() != maxConns {
		t.Fatalf("admitted %d (NumClients %d), want %d", n, h.NumClients(), maxConns)
	}
	for u := range perUserAdmitted {
		if n := perUserAdmitted[u].Load(); n > perUser {
			t.Fatalf("user %d admitted %d times, limit %d", u, n, perUser)
		}
	}
}

// TestGreetRefusedWritesNothing: a client a limit refuses is not greeted:
// Greet writes nothing and returns the limit's error, and ending it counts
// no disconnect.
func TestGreetRefusedWritesNothing(t *testing.T) {
	m := metrics.New()
	h := New(Options{QueueBytes: 1 << 20, PingInterval: time.Minute, PongTimeout: 2 * time.Minute, MaxUserConnections: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	runHub(t, h)
	first := h.NewClient(&countConn{}, ClientOptions{ID: "c1", UserID: "u"})
	if err := first.Greet([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"), TextFrame([]byte(`{}`)), nil); err != nil {
		t.Fatal(err)
	}
	cc := &countConn{}
	second := h.NewClient(cc, ClientOptions{ID: "c2", UserID: "u"})
	ran := false
	err := second.Greet([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"), TextFrame([]byte(`{}`)), func() { ran = true })
	if !errors.Is(err, ErrUserFull) || ran || cc.writes.Load() != 0 {
		t.Fatalf("Greet: %v, setup ran %v, %d writes; want ErrUserFull, no setup, nothing written", err, ran, cc.writes.Load())
	}
	second.Gone(0)
	select {
	case <-second.Done():
	case <-time.After(time.Second):
		t.Fatal("refused client not done after Gone")
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "herald_disconnects_total" {
			t.Fatalf("a refused client counted as a disconnect: %v", mf)
		}
	}
	if h.NumClients() != 1 {
		t.Fatalf("NumClients %d, want 1", h.NumClients())
	}
}

// failConn is a connection whose writes fail, as a socket reset by the peer.
type failConn struct{ countConn }

func (c *failConn) Write([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// TestFailedWriteCountsDisconnect: a connection ended because a write to it
// failed is counted once in herald_disconnects_total, as abnormal.
func TestFailedWriteCountsDisconnect(t *testing.T) {
	h := newTestHub(1 << 20)
	c := h.NewClient(&failConn{}, ClientOptions{ID: "c", UserID: "u"})
	if err := h.Register(c); err != nil {
		t.Fatal(err)
	}
	c.Send(TextFrame([]byte(`{"type":"pong"}`)))
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client not gone after a failed write")
	}
	mfs, err := h.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "herald_disconnects_total" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	if len(got) != 1 || got["abnormal"] != 1 {
		t.Fatalf("herald_disconnects_total %v after one connection ended by a failed write, want abnormal 1", got)
	}
}

// TestAnnounceJoinOnlyWhileSubscribed: a join notice goes to the other
// subscribers only while its client is still subscribed, so a client removed
// between subscribing and announcing (whose leave may be out already) sends
// no join after its leave.
func TestAnnounceJoinOnlyWhileSubscribed(t *testing.T) {
	h := newTestHub(1 << 20)
	runHub(t, h)
	watcher, memberConn := &countConn{}, &countConn{}
	clients := map[string]*Client{}
	for id, nc := range map[string]net.Conn{"watcher": watcher, "gone": &countConn{}, "member": memberConn} {
		c := h.NewClient(nc, ClientOptions{ID: id, UserID: id})
		if err := h.Register(c); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Subscribe(c, "room", nil); err != nil {
			t.Fatal(err)
		}
		clients[id] = c
	}
	clients["gone"].Gone(0)
	<-clients["gone"].Done()
	ghost := []byte(`{"type":"join","clientId":"gone"}`)
	h.Announce("room", NewFrame(append(NewFrameBuffer(len(ghost)), ghost...)), clients["gone"], true)
	join := []byte(`{"type":"join","clientId":"member"}`)
	h.Announce("room", NewFrame(append(NewFrameBuffer(len(join)), join...)), clients["member"], true)
	want := int64(len(TextFrame(join)))
	deadline := time.Now().Add(5 * time.Second)
	for watcher.bytes.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := watcher.bytes.Load(); got != want {
		t.Fatalf("watcher got %d bytes, want %d: the member's join alone", got, want)
	}
	if n := memberConn.bytes.Load(); n != 0 {
		t.Fatalf("the member was sent %d bytes of its own join", n)
	}
}

// TestRegisterRacingDisconnect: a client closed while it registers (its user
// disconnected by the API, say, the moment it connects) still leaves the
// hub, so it holds no place against the connection limits afterwards.
func TestRegisterRacingDisconnect(t *testing.T) {
	h := New(Options{QueueBytes: 1 << 20, PingInterval: time.Minute, PongTimeout: 2 * time.Minute, MaxUserConnections: 1 << 20},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	const n = 5000
	all := make([]*Client, n)
	var wg sync.WaitGroup
	for i := range n {
		c := h.NewClient(&countConn{}, ClientOptions{ID: fmt.Sprint(i), UserID: "u"})
		all[i] = c
		wg.Add(2)
		go func() { defer wg.Done(); _ = h.Register(c) }()
		go func() { defer wg.Done(); h.DisconnectUser("u", 4000, "kicked") }()
	}
	wg.Wait()
	for _, c := range all {
		c.Gone(0)
	}
	eventuallyHub(t, func() bool { return h.NumClients() == 0 && h.Stats(false).Users == 0 }, func() string {
		return fmt.Sprintf("NumClients %d, stats %+v after every client is gone", h.NumClients(), h.Stats(false))
	})
}

// eventuallyHub waits up to 5 s for cond, then fails with what().
func eventuallyHub(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPongsWithinQueueBound: pongs for a client's pings (which its
// transport queues with Send) count against the queue bound, so a client
// that pings and never reads is closed as a slow consumer instead of
// queueing without end.
func TestPongsWithinQueueBound(t *testing.T) {
	h := newTestHub(4 << 10)
	stuck := &countConn{block: make(chan struct{})}
	defer close(stuck.block)
	c := h.NewClient(stuck, ClientOptions{ID: "c", UserID: "u"})
	if err := h.Register(c); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 125)
	for range 1000 {
		c.Send(payload)
	}
	if q := c.pending(); q > 4<<10 || !c.Closing() {
		t.Fatalf("queue holds %d bytes of pongs with a 4 KiB bound (closing: %v), want closed as slow", q, c.Closing())
	}
}

// TestGreetDuringShutdownCounts: a client greeted and closed because the hub
// is shutting down is counted as a connection as well as a disconnect.
func TestGreetDuringShutdownCounts(t *testing.T) {
	m := metrics.New()
	h := New(Options{QueueBytes: 1 << 20, PingInterval: time.Minute, PongTimeout: 2 * time.Minute},
		slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = h.Shutdown(ctx)
	c := h.NewClient(&countConn{}, ClientOptions{ID: "late", UserID: "u"})
	if err := c.Greet([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"), TextFrame([]byte(`{}`)), nil); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("Greet: %v", err)
	}
	c.Gone(0)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	for _, mf := range mfs {
		for _, x := range mf.GetMetric() {
			sums[mf.GetName()] += x.GetCounter().GetValue()
		}
	}
	if sums["herald_connects_total"] != 1 || sums["herald_disconnects_total"] != 1 {
		t.Fatalf("connects_total %v, disconnects_total %v; want 1 and 1", sums["herald_connects_total"], sums["herald_disconnects_total"])
	}
}

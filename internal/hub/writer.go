package hub

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-rt/herald/internal/uring"
)

// yieldEvery is how many clients a writer-pool worker flushes between
// yields to other goroutines. Its writes are raw system calls, during which
// the runtime cannot hand the worker's P to anyone else, and under load the
// pool is never empty: without yielding, a publish request or a client's
// command would wait for the scheduler's 10 ms preemption. A worker writing
// with io_uring yields after each batch of at least yieldEvery clients.
const yieldEvery = 32

// batchClients is the most clients a worker writes with one io_uring
// submission; a larger batch keeps the worker's P longer (the sizes tried:
// docs/performance.md).
const batchClients = 128

// writerPool is a small set of goroutines that flush clients' queues. A
// client with something to send is pushed once (its writing flag guards
// that); a worker takes the whole queue and writes it with one non-blocking
// writev. A client whose socket cannot take it all gets a goroutine of its
// own to finish in blocking mode, so a slow socket never holds a worker and
// never delays other clients. Under load, clients wait their turn in the FIFO
// while more messages gather in their queues, so one system call carries
// several messages.
type writerPool struct {
	log          *slog.Logger
	uringWorkers prometheus.Gauge
	uring        bool         // batch writes with io_uring where the kernel has it
	batched      atomic.Int64 // clients written by io_uring submissions (for tests)
	mu           sync.Mutex
	cond         sync.Cond
	q            []*Client
	head         int
	running      bool // workers are taking clients
	stopped      bool
	yield        func() // runtime.Gosched; see yieldEvery
}

func newWriterPool(log *slog.Logger, useUring bool, uringWorkers prometheus.Gauge) *writerPool {
	p := &writerPool{log: log, uring: useUring, uringWorkers: uringWorkers, yield: runtime.Gosched}
	p.cond.L = &p.mu
	return p
}

// pop appends to dst up to most queued clients, waiting for the first; it
// returns dst unchanged once stopped.
func (p *writerPool) pop(dst []*Client, most int) []*Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.head == len(p.q) && !p.stopped {
		p.cond.Wait()
	}
	for n := 0; n < most && p.head < len(p.q); n++ {
		dst = append(dst, p.q[p.head])
		p.q[p.head] = nil
		p.head++
	}
	if p.head == len(p.q) {
		p.q, p.head = p.q[:0], 0
	} else if p.head > 1024 && p.head > len(p.q)/2 {
		n := copy(p.q, p.q[p.head:])
		clear(p.q[n:])
		p.q, p.head = p.q[:n], 0
	}
	return dst
}

// run starts the workers; they stop when ctx is done, after which queued
// clients are flushed by goroutines of their own.
func (p *writerPool) run(ctx context.Context) {
	p.mu.Lock()
	p.running = true
	p.mu.Unlock()
	n := max(2, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.work(i)
		}()
	}
	<-ctx.Done()
	p.mu.Lock()
	p.stopped = true
	p.running = false
	rest := p.q[p.head:]
	p.q, p.head = nil, 0
	p.mu.Unlock()
	p.cond.Broadcast()
	wg.Wait()
	for _, c := range rest {
		c.hub.group.Go(c.writeLoop)
	}
}

// work is one worker: it takes up to batchClients clients at a time and writes
// them with one io_uring submission, or (without io_uring) takes one at a
// time and writes it with writev.
func (p *writerPool) work(worker int) {
	w := newWritev()
	var bw *batchWriter
	most := 1
	dropRing := func() {
		bw.ring.Close()
		p.uringWorkers.Dec()
		bw, most = nil, 1
	}
	if p.uring {
		ring, err := uring.New(batchClients)
		switch {
		case err == nil:
			defer func() {
				if bw != nil {
					dropRing()
				}
			}()
			bw, most = newBatchWriter(ring, w, &p.batched), ring.Entries()
			p.uringWorkers.Inc()
			if worker == 0 {
				p.log.Info("writer pool: batched writes with io_uring", "clients_per_batch", most)
			}
		case worker == 0:
			p.log.Warn("writer pool: io_uring unavailable, one writev per client", "err", err)
		}
	} else if worker == 0 {
		p.log.Info("writer pool: one writev per client (io_uring off)")
	}
	clients := make([]*Client, 0, most)
	since := 0 // clients flushed since the last yield
	for {
		clients = p.pop(clients[:0], most)
		if len(clients) == 0 {
			return
		}
		if bw != nil {
			bw.flush(clients, p.yield)
			if bw.broken != nil {
				p.log.Error("writer pool: io_uring failed, one writev per client from now on", "worker", worker, "err", bw.broken)
				dropRing()
			}
		} else {
			clients[0].flushOnce(w)
		}
		clear(clients)
		if since += len(clients); since >= yieldEvery {
			// Writes are raw system calls, which keep the P: let waiting
			// goroutines (API handlers, readers) run.
			since = 0
			p.yield()
		}
	}
}

// schedule hands c to the pool, or to a goroutine of its own when the pool
// is not running.
func (p *writerPool) schedule(c *Client) {
	p.mu.Lock()
	running := p.running
	if running {
		p.q = append(p.q, c)
	}
	p.mu.Unlock()
	if !running {
		c.hub.group.Go(c.writeLoop)
		return
	}
	p.cond.Signal()
}

// flushOnce writes what c has queued without blocking the worker.
func (c *Client) flushOnce(w *writev) {
	batch, closing := c.next()
	if batch == nil {
		if closing != nil {
			c.hub.group.Go(func() { c.finishClose(closing) })
		}
		return
	}
	c.finishFlush(batch, w)
}

// finishFlush writes batch, taken from c's queue, with non-blocking writev
// calls and carries on from there.
func (c *Client) finishFlush(batch [][]byte, w *writev) {
	n, done, err := c.tryWritev(w, batch)
	var t tally
	c.afterWrite(batch, n, done, err, &t)
	t.report(c.hub)
}

// tally adds up what writes put out, for the metrics: a batch of clients
// reports once, not per client (two atomic adds on counters that every
// worker shares, per delivery).
type tally struct{ bytes, messages int }

func (t *tally) report(h *Hub) {
	if t.bytes > 0 {
		h.metrics.BytesOut.Add(float64(t.bytes))
	}
	if t.messages > 0 {
		h.metrics.MessagesOut.Add(float64(t.messages))
	}
	*t = tally{}
}

// afterWrite carries on after a non-blocking write of batch put n bytes
// out: done when all of it went, err when the socket failed. A socket that
// filled up is finished in blocking mode on a goroutine of its own; else the
// writer role goes back to the pool or is released. What was written is
// added to t.
func (c *Client) afterWrite(batch [][]byte, n int, done bool, err error, t *tally) {
	t.bytes += n
	if err != nil {
		c.failWrite(batch)
		return
	}
	if !done {
		c.hub.group.Go(func() { c.writeRest(batch, n) })
		return
	}
	t.messages += len(batch)
	c.mu.Lock()
	c.recycleLocked(batch)
	c.handOffLocked()
}

// handOffLocked ends a write with c.mu held, and unlocks it: the writer role
// goes back to the pool when more is queued (or the close frame waits), else
// it is released.
func (c *Client) handOffLocked() {
	more := len(c.queue) > 0 || (c.state == stateClosing && c.closeFrame != nil)
	if c.rebind != nil {
		c.releaseLocked()
		more = false
	} else if !more {
		c.writing = false
	}
	c.mu.Unlock()
	if more {
		c.hub.writers.schedule(c)
	}
}

// next is a writer's next step: the queued bytes to write, or else the
// transport's close to send last (the caller then finishes the close), or else
// nothing, in which case the client is no longer being written.
func (c *Client) next() (batch [][]byte, closing []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rebind != nil {
		c.releaseLocked()
		return nil, nil
	}
	if len(c.queue) > 0 {
		return c.takeLocked(), nil
	}
	if c.state == stateClosing && c.closeFrame != nil {
		closing, c.closeFrame = c.closeFrame, nil
		return nil, closing
	}
	c.writing = false
	return nil, nil
}

// takeLocked removes and returns everything queued. c.mu must be held.
func (c *Client) takeLocked() [][]byte {
	batch := c.queue
	c.queue = c.spare[:0]
	c.spare = nil
	c.inflight += c.queuedBytes // released when its write is done
	c.queuedBytes = 0
	c.burst = 0
	return batch
}

// recycleLocked keeps a small batch array for reuse, the batch having been
// written (or handed on whole), and releases its bytes from the memory
// budget. c.mu must be held.
func (c *Client) recycleLocked(batch [][]byte) {
	c.acct.Release(c.inflight)
	c.inflight = 0
	clear(batch)
	if c.spare == nil && cap(batch) <= 8 {
		c.spare = batch[:0]
	}
}

// failWrite ends the connection after a write error.
func (c *Client) failWrite(batch [][]byte) {
	clear(batch)
	c.mu.Lock()
	wasOpen := c.state == stateOpen // else the close that began counted it
	c.state = stateClosed
	c.queue = nil
	c.acct.Release(c.inflight)
	c.inflight = 0
	c.releaseQueueLocked()
	c.closeFrame = nil
	c.releaseLocked()
	c.mu.Unlock()
	if wasOpen {
		c.hub.metrics.Disconnects.WithLabelValues("abnormal").Inc()
	}
	c.abort()
}

// writev is a writer's reusable state for tryWritev: the batch, the iovec
// array and the results, with the callback for RawConn.Control bound once,
// so that a write allocates nothing (a closure over them would escape to
// the heap on every call). One goroutine uses a writev at a time.
type writev struct {
	batch [][]byte
	iov   []iovec
	used  int // iovecs filled, the most in one call: cleared afterwards
	n     int
	done  bool
	err   error
	fn    func(fd uintptr)
}

func newWritev() *writev {
	w := &writev{iov: make([]iovec, 0, 64)}
	w.fn = w.run
	return w
}

// tryWritev writes batch with non-blocking writev calls. It reports how many
// bytes went out and whether all did; it never waits for the socket.
//
// It goes through RawConn.Control, not RawConn.Write: Control only holds a
// reference that keeps the descriptor open (and its number unused) during
// the call, while Write also takes the conn's write lock and resets its
// runtime poll descriptor for a wait that never comes here. The writer role
// already makes this the socket's only writer, and fanning out to 10k
// sockets paid for those 10k poll descriptors in cache misses.
func (c *Client) tryWritev(w *writev, batch [][]byte) (n int, done bool, err error) {
	if c.raw == nil {
		return 0, false, nil
	}
	w.start(batch)
	rerr := c.raw.Control(w.fn)
	n, done, err = w.finish()
	if rerr != nil {
		return n, false, rerr
	}
	return n, done, err
}

// start readies w to write batch.
func (w *writev) start(batch [][]byte) {
	w.batch, w.n, w.done, w.err = batch, 0, false, nil
}

// finish returns what the write since start did and lets go of the batch.
func (w *writev) finish() (n int, done bool, err error) {
	n, done, err = w.n, w.done, w.err
	w.batch, w.err = nil, nil
	clear(w.iov[:w.used]) // keep no frame alive after its write
	w.used = 0
	return n, done, err
}

// writeRest finishes a batch the socket could not take at once, skipping the
// n bytes already written, then carries on as the client's own writer.
func (c *Client) writeRest(batch [][]byte, n int) {
	if c.blockingWrite(batch, unwritten(batch, n)) {
		c.writeLoop()
	}
}

// unwritten returns what is left of batch after its first n bytes, as new
// buffers (batch itself is left as it is).
func unwritten(batch [][]byte, n int) net.Buffers {
	rest := batch
	for len(rest) > 0 && n >= len(rest[0]) {
		n -= len(rest[0])
		rest = rest[1:]
	}
	bufs := make(net.Buffers, len(rest))
	copy(bufs, rest)
	if len(bufs) > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}

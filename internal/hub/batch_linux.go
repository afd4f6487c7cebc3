//go:build linux && !herald_portable

package hub

import (
	"errors"
	"math"
	"sync/atomic"
	"syscall"

	"github.com/herald-rt/herald/internal/uring"
)

// maxBatchIovecs bounds the buffers a client's part of a batched write
// takes; a client with more queued frames than that is written on its own
// with writev, which loops over them.
const maxBatchIovecs = 64

// frameBudget is how many frames a batched write gathers at most (give or
// take one client's) before it is submitted and the worker yields: at one
// frame per client the batch is bounded by its 128 clients; a saturated
// worker, whose clients have dozens of frames each, writes a few at a time.
const frameBudget = 256

// notDone marks a result the ring has not filled.
const notDone = math.MinInt32

// batchWriter is a writer-pool worker's state for writing up to
// ring.Entries() clients with one io_uring submission: one send (one
// frame) or sendmsg (several) per client, all non-blocking, all completed
// before Submit returns: one system call for many small writes to many
// sockets (what that saves: docs/performance.md).
//
// The clients' descriptors are held open for the whole submission: each
// client's RawConn.Control calls the next one's (hold), the innermost
// submits, and none can be closed, or its number given to a new connection,
// while the kernel writes to it.
type batchWriter struct {
	ring    *uring.Ring
	count   *atomic.Int64 // clients written by the ring
	w       *writev       // for clients written on their own
	clients []*Client
	batches [][][]byte
	fds     []int
	errs    []error // Control's error: the client's descriptor is gone
	res     []int32
	msgs    []syscall.Msghdr
	iovs    []syscall.Iovec
	i       int // the client whose descriptor hold takes next
	fn      func(fd uintptr)
	broken  error // the ring failed: the worker goes on without it
	tally   tally // what the batch wrote, for the metrics
}

// newBatchWriter makes a batch writer for ring; w (the worker's) writes
// the clients written on their own.
func newBatchWriter(ring *uring.Ring, w *writev, count *atomic.Int64) *batchWriter {
	n := ring.Entries()
	b := &batchWriter{
		ring:    ring,
		count:   count,
		w:       w,
		clients: make([]*Client, 0, n),
		batches: make([][][]byte, 0, n),
		fds:     make([]int, n),
		errs:    make([]error, n),
		res:     make([]int32, n),
		msgs:    make([]syscall.Msghdr, n),
		iovs:    make([]syscall.Iovec, 0, n*4),
	}
	b.fn = b.hold
	return b
}

// flush writes clients' queues: each gives its queue up (or its close
// frame, or nothing), those with frames are written together, and each then
// carries on as flushOnce's would. Under load clients have many frames
// each; once frameBudget frames are gathered they are written and the
// worker yields (yield) before it goes on with the rest, so that one
// submission never keeps the worker's P for long.
func (b *batchWriter) flush(clients []*Client, yield func()) {
	frames := 0
	for i, c := range clients {
		batch, closing := c.next()
		switch {
		case batch == nil:
			if closing != nil {
				c.hub.group.Go(func() { c.finishClose(closing) })
			}
		case c.raw == nil || len(batch) > maxBatchIovecs || b.broken != nil:
			// No descriptor, more frames than a request takes, or the
			// ring failed earlier in this flush: writev.
			c.finishFlush(batch, b.w)
			frames += len(batch)
		default:
			b.clients = append(b.clients, c)
			b.batches = append(b.batches, batch)
			frames += len(batch)
		}
		if frames >= frameBudget && i < len(clients)-1 {
			b.write()
			frames = 0
			yield()
		}
	}
	b.write()
}

// write writes the gathered clients with one submission and carries on
// for each.
func (b *batchWriter) write() {
	if len(b.clients) == 0 {
		return
	}
	b.i = 0
	b.descend()
	h := b.clients[0].hub
	for k, c := range b.clients {
		batch := b.batches[k]
		var n int
		var done bool
		var err error
		switch r := b.res[k]; {
		case b.errs[k] != nil:
			err = b.errs[k]
		case r >= 0:
			n = int(r)
			done = n == batchLen(batch)
		case r == -int32(syscall.EAGAIN):
		default:
			err = syscall.Errno(-r)
		}
		c.afterWrite(batch, n, done, err, &b.tally)
		b.batches[k], b.clients[k], b.errs[k] = nil, nil, nil
	}
	b.tally.report(h)
	b.clients, b.batches = b.clients[:0], b.batches[:0]
	clear(b.iovs) // keep no frame alive after its write
	b.iovs = b.iovs[:0]
}

// descend holds the next client's descriptor open and goes on from inside
// its Control; past the last client it submits.
func (b *batchWriter) descend() {
	for b.i < len(b.clients) {
		k := b.i
		b.i++
		if err := b.clients[k].raw.Control(b.fn); err != nil {
			b.errs[k] = err
			b.fds[k] = -1
			continue
		}
		return // hold went on with the rest
	}
	b.submit()
}

func (b *batchWriter) hold(fd uintptr) {
	b.fds[b.i-1] = int(fd)
	b.descend()
}

// submit queues one request per client whose descriptor is held and writes
// them all. Every descriptor is held while it runs.
func (b *batchWriter) submit() {
	// The msghdrs point into iovs: it must not grow while they are made.
	need := 0
	for _, batch := range b.batches {
		need += len(batch)
	}
	if cap(b.iovs) < need {
		b.iovs = make([]syscall.Iovec, 0, need)
	}
	for k, batch := range b.batches {
		b.res[k] = notDone
		if b.fds[k] < 0 {
			continue
		}
		first, count := -1, 0
		for j, f := range batch {
			if len(f) > 0 {
				if first < 0 {
					first = j
				}
				count++
			}
		}
		switch count {
		case 0:
			b.res[k] = 0 // nothing to write: done
		case 1:
			b.ring.PrepSend(b.fds[k], batch[first], uint64(k))
		default:
			start := len(b.iovs)
			for _, f := range batch {
				if len(f) > 0 {
					iov := syscall.Iovec{Base: &f[0]}
					iov.SetLen(len(f))
					b.iovs = append(b.iovs, iov)
				}
			}
			b.ring.PrepSendmsg(b.fds[k], &b.msgs[k], b.iovs[start:], uint64(k))
		}
	}
	prepared := b.ring.Prepared()
	err := b.ring.Submit(b.res[:len(b.batches)])
	switch {
	case err == nil:
		b.count.Add(int64(prepared))
	case errors.Is(err, uring.ErrNotSubmitted):
		// The kernel did not take part of the submission: write what it
		// did not take one client at a time, the descriptors still held.
		// Short of memory, it may take the next; else (io_uring_enter
		// refused, say by a seccomp profile that let the ring be made) the
		// worker goes on with writev, and no client is in doubt.
		for k, batch := range b.batches {
			if b.res[k] == notDone && b.fds[k] >= 0 {
				b.res[k] = b.writevOne(b.fds[k], batch)
				prepared--
			}
		}
		b.count.Add(int64(prepared))
		if !uring.Retryable(err) {
			b.broken = err
		}
	default:
		// The ring failed while requests were in the kernel's hands: end
		// the clients whose results are unknown (their buffers may yet be
		// read) and write with writev from now on.
		b.broken = err
		for k := range b.batches {
			if b.res[k] == notDone && b.fds[k] >= 0 {
				b.errs[k] = err
			}
		}
	}
}

// writevOne writes batch to fd with writev and returns the result as the
// ring would give it.
func (b *batchWriter) writevOne(fd int, batch [][]byte) int32 {
	b.w.start(batch)
	b.w.run(uintptr(fd))
	n, done, err := b.w.finish()
	switch {
	case err != nil:
		if e, ok := err.(syscall.Errno); ok {
			return -int32(e)
		}
		return -int32(syscall.EIO)
	case n == 0 && !done:
		return -int32(syscall.EAGAIN)
	}
	return int32(min(n, math.MaxInt32))
}

// batchLen is the bytes in batch.
func batchLen(batch [][]byte) int {
	n := 0
	for _, f := range batch {
		n += len(f)
	}
	return n
}

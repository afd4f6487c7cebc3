//go:build !linux || herald_portable

package hub

import (
	"sync/atomic"

	"github.com/herald-rt/herald/internal/uring"
)

// batchWriter batches writes with io_uring, which only Linux has (see
// batch_linux.go). Elsewhere uring.New always fails, so the writer pool
// never makes one; should it, each client is written on its own.
type batchWriter struct {
	ring   *uring.Ring
	w      *writev
	broken error
}

func newBatchWriter(ring *uring.Ring, w *writev, _ *atomic.Int64) *batchWriter {
	return &batchWriter{ring: ring, w: w}
}

func (b *batchWriter) flush(clients []*Client, _ func()) {
	for _, c := range clients {
		c.flushOnce(b.w)
	}
}

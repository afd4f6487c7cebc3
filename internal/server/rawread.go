package server

import (
	"bufio"
	"net"
	"syscall"

	"github.com/herald-rt/herald/internal/rawio"
)

// connReader is a pooled read buffer: a connection holds one only while it
// reads. Reads are raw system calls (internal/rawio).
type connReader struct {
	br  *bufio.Reader
	raw rawio.Reader
}

// reset points r at c, read through rc when c has a descriptor.
func (r *connReader) reset(c net.Conn, rc syscall.RawConn) *bufio.Reader {
	if rc != nil {
		r.raw.Reset(rc)
		r.br.Reset(&r.raw)
	} else {
		r.br.Reset(c)
	}
	return r.br
}

// release returns r to readerPool.
func (r *connReader) release() {
	r.br.Reset(nil)
	r.raw.Reset(nil)
	readerPool.Put(r)
}

// Package rawio reads and writes sockets with read(2) and write(2) made as
// raw system calls (syscall.RawSyscall), still waiting for readiness — and
// honouring the deadlines — through the connection's syscall.RawConn, as
// net.Conn does. (The hub's writer pool writes the same way, with writev and
// io_uring.) The sessions and the sniffer read with a Reader; the
// connections handed to net/http (the server API) are Conns.
//
// The sockets are non-blocking, so the calls never block. What the raw form
// saves is the runtime's system-call bookkeeping, and above all the wake-up
// of sysmon that an ordinary system call makes whenever the scheduler was
// idle just before it (what that cost: docs/performance.md).
//
// Off Unix, RawConn is nil for every connection, and the callers read and
// write through the net.Conn itself.
package rawio

import (
	"io"
	"net"
	"syscall"
)

// call is one raw read(2) or write(2) on a connection, made inside its
// RawConn's Read or Write (which wait in Go's poller while it answers
// EAGAIN), with its callback bound once so that a call allocates nothing.
type call struct {
	rc    syscall.RawConn
	nr    uintptr // sysRead or sysWrite
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // c.run, bound once
}

func (c *call) reset(rc syscall.RawConn, nr uintptr) {
	c.rc, c.nr = rc, nr
	if c.fn == nil {
		c.fn = c.run
	}
}

// Reader reads a connection; its zero value is ready for Reset. It
// allocates nothing per read. One goroutine reads through a Reader at a
// time.
type Reader struct{ c call }

// Reset points r at rc (nil to let it go).
func (r *Reader) Reset(rc syscall.RawConn) { r.c.reset(rc, sysRead) }

// Read reads what the socket holds, waiting until it holds something. Like
// net.Conn.Read it returns io.EOF at the end of the stream, and an error
// for which errors.Is(err, os.ErrDeadlineExceeded) past the read deadline.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c := &r.c
	c.p, c.n, c.errno = p, 0, 0
	err := c.rc.Read(c.fn)
	c.p = nil
	switch {
	case err != nil:
		return 0, err
	case c.errno != 0:
		return 0, c.errno
	case c.n == 0:
		return 0, io.EOF
	}
	return c.n, nil
}

// Writer writes a connection; its zero value is ready for Reset. One
// goroutine writes through a Writer at a time.
type Writer struct{ c call }

// Reset points w at rc (nil to let it go).
func (w *Writer) Reset(rc syscall.RawConn) { w.c.reset(rc, sysWrite) }

// Write writes all of p, waiting for the socket to take it, as
// net.Conn.Write does (the write deadline applies).
func (w *Writer) Write(p []byte) (int, error) {
	c := &w.c
	written := 0
	for len(p) > 0 {
		c.p, c.n, c.errno = p, 0, 0
		err := c.rc.Write(c.fn)
		c.p = nil
		switch {
		case err != nil:
			return written, err
		case c.errno != 0:
			return written, c.errno
		}
		written += c.n
		p = p[c.n:]
	}
	return written, nil
}

// Conn is a TCP connection whose Read and Write are raw system calls.
// Everything else — deadlines, Close, CloseWrite, SyscallConn — is the
// embedded *net.TCPConn's. Read and Write may be used at the same time
// from two goroutines, as with any net.Conn.
type Conn struct {
	*net.TCPConn
	r Reader
	w Writer
}

// NewConn wraps c.
func NewConn(c *net.TCPConn) *Conn {
	cn := &Conn{TCPConn: c}
	if rc := RawConn(c); rc != nil {
		cn.r.Reset(rc)
		cn.w.Reset(rc)
	}
	return cn
}

func (c *Conn) Read(p []byte) (int, error) {
	if c.r.c.rc == nil {
		return c.TCPConn.Read(p)
	}
	return c.r.Read(p)
}

func (c *Conn) Write(p []byte) (int, error) {
	if c.w.c.rc == nil {
		return c.TCPConn.Write(p)
	}
	return c.w.Write(p)
}

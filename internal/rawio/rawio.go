// Package rawio reads and writes sockets with read(2) and write(2) made as
// raw system calls (syscall.RawSyscall), still waiting for readiness — and
// honouring the deadlines — through the connection's syscall.RawConn, as
// net.Conn does.
//
// The sockets are non-blocking, so the calls never block. What the raw form
// saves is the runtime's system-call bookkeeping, and above all the wake-up
// of sysmon that an ordinary system call makes whenever the scheduler was
// idle just before it: a woken sysmon checks every 20 µs for the next
// millisecond or more, on cores the work it interrupts needs. A connect
// storm or a 10-publications-a-second fan-out goes idle and busy again many
// times a second; see docs/performance.md for what sysmon cost there.
package rawio

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// RawConn is c's RawConn, or nil when c has no descriptor.
func RawConn(c net.Conn) syscall.RawConn {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// Reader reads a connection; its zero value is ready for Reset. It
// allocates nothing per read. One goroutine reads through a Reader at a
// time.
type Reader struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // r.read, bound once
}

// Reset points r at rc (nil to let it go).
func (r *Reader) Reset(rc syscall.RawConn) {
	r.rc = rc
	if r.fn == nil {
		r.fn = r.read
	}
}

func (r *Reader) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		if e == syscall.EINTR {
			continue
		}
		r.n, r.errno = int(n), e
		return e != syscall.EAGAIN
	}
}

// Read reads what the socket holds, waiting until it holds something. Like
// net.Conn.Read it returns io.EOF at the end of the stream, and an error
// for which errors.Is(err, os.ErrDeadlineExceeded) past the read deadline.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.errno = p, 0, 0
	err := r.rc.Read(r.fn)
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.errno != 0:
		return 0, r.errno
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// Writer writes a connection; its zero value is ready for Reset. One
// goroutine writes through a Writer at a time.
type Writer struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // w.write, bound once
}

// Reset points w at rc (nil to let it go).
func (w *Writer) Reset(rc syscall.RawConn) {
	w.rc = rc
	if w.fn == nil {
		w.fn = w.write
	}
}

func (w *Writer) write(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.p[0])), uintptr(len(w.p)))
		if e == syscall.EINTR {
			continue
		}
		w.n, w.errno = int(n), e
		return e != syscall.EAGAIN
	}
}

// Write writes all of p, waiting for the socket to take it, as
// net.Conn.Write does (the write deadline applies).
func (w *Writer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		w.p, w.n, w.errno = p, 0, 0
		err := w.rc.Write(w.fn)
		w.p = nil
		switch {
		case err != nil:
			return written, err
		case w.errno != 0:
			return written, w.errno
		}
		written += w.n
		p = p[w.n:]
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
	rc := RawConn(c)
	if rc == nil {
		return &Conn{TCPConn: c}
	}
	cn := &Conn{TCPConn: c}
	cn.r.Reset(rc)
	cn.w.Reset(rc)
	return cn
}

func (c *Conn) Read(p []byte) (int, error) {
	if c.r.rc == nil {
		return c.TCPConn.Read(p)
	}
	return c.r.Read(p)
}

func (c *Conn) Write(p []byte) (int, error) {
	if c.w.rc == nil {
		return c.TCPConn.Write(p)
	}
	return c.w.Write(p)
}

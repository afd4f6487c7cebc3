package server

import (
	"bufio"
	"io"
	"net"
	"syscall"
	"unsafe"
)

// rawReader reads a connection with read(2) made as syscall.RawSyscall,
// waiting for readiness (and honouring the read deadline) through the
// connection's RawConn as net.Conn.Read does. The socket is non-blocking,
// so the call cannot block; what the raw form saves is the runtime's
// syscall bookkeeping, and above all the wake-up of sysmon that every
// ordinary system call makes when the scheduler was idle just before: a
// woken sysmon polls every 20 µs for the next millisecond or more, which
// during a connect storm cost about 6 % of the server's CPU (see
// docs/performance.md). The hub's writer writes the same way.
type rawReader struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // r.read, bound once
}

// connReader is a pooled read buffer: a connection holds one only while it
// reads.
type connReader struct {
	br  *bufio.Reader
	raw rawReader
}

// reset points r at c, read through rc when c has a descriptor.
func (r *connReader) reset(c net.Conn, rc syscall.RawConn) *bufio.Reader {
	if rc != nil {
		r.raw.rc = rc
		r.br.Reset(&r.raw)
	} else {
		r.br.Reset(c)
	}
	return r.br
}

// release returns r to readerPool.
func (r *connReader) release() {
	r.br.Reset(nil)
	r.raw.rc = nil
	readerPool.Put(r)
}

// rawConn is c's RawConn, or nil when c has no descriptor.
func rawConn(c net.Conn) syscall.RawConn {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

func (r *rawReader) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		if e == syscall.EINTR {
			continue
		}
		r.n, r.errno = int(n), e
		return e != syscall.EAGAIN
	}
}

func (r *rawReader) Read(p []byte) (int, error) {
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

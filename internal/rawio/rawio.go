// Package rawio reads sockets with read(2) made as a raw system call
// (syscall.RawSyscall), still waiting for readiness — and honouring the read
// deadline — through the connection's syscall.RawConn, as net.Conn does.
// (The hub's writer pool writes the same way, with writev.)
//
// The socket is non-blocking, so the call never blocks. What the raw form
// saves is the runtime's system-call bookkeeping, and above all the wake-up
// of sysmon that an ordinary system call makes whenever the scheduler was
// idle just before it: a woken sysmon checks every 20 µs for the next
// millisecond or more, on cores the work it interrupts needs. A connect
// storm goes idle and busy again many times a second; see
// docs/performance.md for what sysmon cost there.
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

//go:build unix && !herald_portable

package rawio

import (
	"net"
	"syscall"
	"unsafe"
)

const (
	sysRead  = syscall.SYS_READ
	sysWrite = syscall.SYS_WRITE
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

func (c *call) run(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(c.nr, fd, uintptr(unsafe.Pointer(&c.p[0])), uintptr(len(c.p)))
		if e == syscall.EINTR {
			continue
		}
		c.n, c.errno = int(n), e
		return e != syscall.EAGAIN
	}
}

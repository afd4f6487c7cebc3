//go:build windows || herald_portable

package rawio

import (
	"net"
	"syscall"
)

// Windows has no read(2) and write(2) on sockets: RawConn is always nil, so
// no Reader, Writer or Conn ever makes a call, and Conn reads and writes
// through the embedded *net.TCPConn. The herald_portable build tag gives
// Unix the same, so that the tests exercise this path on Linux.
const (
	sysRead = iota
	sysWrite
)

// RawConn is nil here: the callers use the net.Conn itself.
func RawConn(net.Conn) syscall.RawConn { return nil }

// run is never reached (see RawConn); it fails the call rather than guess.
func (c *call) run(uintptr) bool {
	c.n, c.errno = 0, syscall.EINVAL
	return true
}

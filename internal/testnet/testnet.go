// Package testnet holds what tests of several packages need around real
// servers and the network: real loopback TCP connections (herald's raw
// reads and writes need real sockets, not net.Pipe), and a buffer for
// output written from several goroutines.
package testnet

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// TCPPair returns both ends of a new loopback TCP connection: the accepted
// (server) side and the dialing peer. Both close when the test ends.
func TCPPair(tb testing.TB) (server, peer *net.TCPConn) {
	tb.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { peer.Close() })
	server, err = ln.AcceptTCP()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { server.Close() })
	return server, peer
}

// FD is c's descriptor number, for tests that hand it to system calls
// themselves; c must stay open while they use it.
func FD(tb testing.TB, c *net.TCPConn) int {
	tb.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var fd int
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		tb.Fatal(err)
	}
	return fd
}

// Buffer is a bytes.Buffer that goroutines may write and read at the same
// time: a server's or a worker process's output, read by the test.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *Buffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *Buffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

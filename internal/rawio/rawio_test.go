package rawio

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"github.com/herald-rt/herald/internal/testnet"
)

// TestConn: a Conn reads and writes at the same time from two goroutines,
// and keeps the TCP connection's other methods.
func TestConn(t *testing.T) {
	s, c := testnet.TCPPair(t)
	conn := NewConn(s)
	var wg sync.WaitGroup
	wg.Go(func() { // echo from the peer
		_, _ = io.Copy(c, c)
	})
	msg := bytes.Repeat([]byte("x"), 1<<20)
	var read []byte
	var rerr error
	wg.Go(func() {
		read, rerr = io.ReadAll(io.LimitReader(conn, int64(len(msg))))
	})
	if n, err := conn.Write(msg); n != len(msg) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if rerr != nil || !bytes.Equal(read, msg) {
		t.Fatalf("read back %d bytes, %v", len(read), rerr)
	}
	if conn.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("RemoteAddr %v", conn.RemoteAddr())
	}
}

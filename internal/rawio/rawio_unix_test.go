//go:build unix && !herald_portable

package rawio

import (
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/testnet"
)

// TestReader: what arrives is read; a read with nothing there waits in the
// runtime's poller; the read deadline, EOF and a reset are reported as
// net.Conn.Read reports them.
func TestReader(t *testing.T) {
	s, c := testnet.TCPPair(t)
	var r Reader
	r.Reset(RawConn(s))
	buf := make([]byte, 16)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(&r, buf[:5]); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read = %q, %v", buf[:n], err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = c.Write([]byte("later"))
	}()
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "later" {
		t.Fatalf("waiting read = %q, %v", buf[:n], err)
	}
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := r.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	_ = s.SetReadDeadline(time.Time{})
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}
	_, _ = c.Write([]byte("bye"))
	_ = c.CloseWrite()
	if b, err := io.ReadAll(&r); err != nil || string(b) != "bye" {
		t.Fatalf("read to EOF = %q, %v", b, err)
	}
	if _, err := r.Read(buf); err != io.EOF {
		t.Fatalf("read after EOF: %v, want io.EOF", err)
	}

	s2, c2 := testnet.TCPPair(t)
	_ = c2.SetLinger(0)
	_ = c2.Close() // RST
	r.Reset(RawConn(s2))
	_ = s2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a reset: %v, want ECONNRESET", err)
	}
}

// TestWriter: Write writes all of a buffer far larger than the socket's,
// waiting for the peer to drain it, and stops at the write deadline when
// the peer does not.
func TestWriter(t *testing.T) {
	s, c := testnet.TCPPair(t)
	var w Writer
	w.Reset(RawConn(s))
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(c, int64(len(big))))
		got <- b
	}()
	if n, err := w.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(big))
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not what was written", len(b))
	}

	// Nobody reads now: the write fills both buffers (a few MiB on
	// loopback) and hits the deadline.
	huge := make([]byte, 64<<20)
	// Long enough that the first bytes go out before it on a loaded machine.
	_ = s.SetWriteDeadline(time.Now().Add(time.Second))
	n, err := w.Write(huge)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == len(huge) {
		t.Fatalf("Write to a peer that does not read = %d, %v; want part of it and os.ErrDeadlineExceeded", n, err)
	}
	if n, err := w.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write = %d, %v", n, err)
	}
}

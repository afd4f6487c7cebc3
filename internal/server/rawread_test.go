package server

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(); _ = c.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// TestRawReader: the raw reader reads what arrives, waits for data that is
// not there yet, honours the read deadline, and reports EOF and a reset as
// net.Conn.Read would (the session tells them apart by these errors).
func TestRawReader(t *testing.T) {
	s, c := tcpPair(t)
	r := readerPool.Get().(*connReader)
	defer r.release()
	br := r.reset(s, rawConn(s))
	if br.Buffered() != 0 {
		t.Fatal("a reused reader holds bytes")
	}

	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadFull(br, buf[:5]); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read = %q, %v", buf[:n], err)
	}

	// Nothing there yet: the read waits in the runtime's poller.
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = c.Write([]byte("later"))
	}()
	if n, err := br.Read(buf); err != nil || string(buf[:n]) != "later" {
		t.Fatalf("waiting read = %q, %v", buf[:n], err)
	}

	_ = s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := br.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	_ = s.SetReadDeadline(time.Time{})

	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if b, err := io.ReadAll(br); err != nil || string(b) != "bye" {
		t.Fatalf("read to EOF = %q, %v", b, err)
	}
	if _, err := br.Read(buf); err != io.EOF {
		t.Fatalf("read after EOF: %v, want io.EOF", err)
	}
}

func TestRawReaderReset(t *testing.T) {
	s, c := tcpPair(t)
	_ = c.SetLinger(0)
	_ = c.Close() // RST
	r := readerPool.Get().(*connReader)
	defer r.release()
	br := r.reset(s, rawConn(s))
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.Read(make([]byte, 8)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a reset: %v, want ECONNRESET", err)
	}
}

package server

import (
	"bytes"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/herald-rt/herald/internal/rawio"
	"github.com/herald-rt/herald/internal/testnet"
)

// TestReplayConn: a connection handed to net/http reads the sniffed head
// first, then the socket (raw reads), writes (raw writes), and keeps what
// net/http and a hijack look for: CloseWrite and SyscallConn.
func TestReplayConn(t *testing.T) {
	s, c := testnet.TCPPair(t)
	rc := &replayConn{Conn: rawio.NewConn(s), head: []byte("GET / HT")}
	if _, err := c.Write([]byte("TP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("GET / HTTP/1.1\r\n"))
	if _, err := io.ReadFull(rc, got); err != nil || string(got) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := rc.Write([]byte("HTTP/1.1 200 OK\r\n")); err != nil {
		t.Fatal(err)
	}
	var conn net.Conn = rc
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("no CloseWrite: net/http cannot half-close")
	}
	if _, ok := conn.(syscall.Conn); !ok {
		t.Fatal("no SyscallConn: a hijacked connection cannot be read on readiness")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("the peer read %q, %v", b, err)
	}
}

// TestReplayConnCopy: io.Copy from a handed-over connection starts with the
// sniffed head (it must not go around Read through the TCP connection's
// WriteTo).
func TestReplayConnCopy(t *testing.T) {
	s, c := testnet.TCPPair(t)
	rc := &replayConn{Conn: rawio.NewConn(s), head: []byte("head ")}
	if _, err := c.Write([]byte("and body")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	var got bytes.Buffer
	if _, err := io.Copy(&got, rc); err != nil || got.String() != "head and body" {
		t.Fatalf("copied %q, %v", got.String(), err)
	}
}

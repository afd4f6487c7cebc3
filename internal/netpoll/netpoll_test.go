package netpoll

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadinessOneShotAndResume(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); p.Close(); <-done }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	got := make(chan string, 10)
	var calls atomic.Int32
	var d *Desc
	d, err = p.Add(server.(*net.TCPConn), func() {
		calls.Add(1)
		buf := make([]byte, 16)
		n, err := server.Read(buf)
		if err != nil {
			got <- "err:" + err.Error()
			d.Remove()
			return
		}
		got <- string(buf[:n])
		_ = d.Resume()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"one", "two", "three"} {
		if _, err := client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-got:
			if s != msg {
				t.Fatalf("got %q, want %q", s, msg)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no readiness for %q", msg)
		}
	}
	// Idle: the handler does not run without data.
	time.Sleep(50 * time.Millisecond)
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times, want 3", n)
	}
	// EOF is a readiness too.
	client.Close()
	select {
	case s := <-got:
		if s != "err:"+io.EOF.Error() {
			t.Fatalf("got %q, want EOF", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no readiness on EOF")
	}
}

func TestAddAfterClose(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	c, _ := net.Dial("tcp", ln.Addr().String())
	defer c.Close()
	if _, err := p.Add(c.(*net.TCPConn), func() {}); err != ErrClosed {
		t.Fatalf("Add after Close: %v", err)
	}
}

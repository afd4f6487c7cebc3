package bench

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestSourceAddressesRotate: on Linux a fleet's connections to an IPv4
// target rotate through 127.0.0.1–8 as source addresses, which keeps each
// address's ephemeral ports far from running short (see sourceIPs).
func TestSourceAddressesRotate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	tg, err := parseTarget("ws://"+ln.Addr().String()+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	ips := sourceIPs(tg)
	if len(ips) != 8 || ips[0] != "127.0.0.1" || ips[7] != "127.0.0.8" {
		t.Fatalf("source addresses %v", ips)
	}
	f, err := newLocalFleet(fleetSpec{WSURL: tg.wsURL, SourceIPs: ips, Reader: "goroutine"})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for idx := range 16 {
		nc, err := dialLoopback(t.Context(), tg.hostPort, f.localFor(idx), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := nc.LocalAddr().(*net.TCPAddr).IP.String(), ips[idx%8]; got != want {
			t.Fatalf("connection %d from %s, want %s", idx, got, want)
		}
		nc.Close()
		count[<-seen]++
	}
	for _, ip := range ips {
		if count[ip] != 2 {
			t.Fatalf("the server saw %v", count)
		}
	}

	// Not for ::1, and a spec naming a non-loopback source is refused.
	if v6, err := parseTarget("ws://[::1]:1/ws", ""); err != nil || sourceIPs(v6) != nil {
		t.Fatalf("::1: %v %v", sourceIPs(v6), err)
	}
	if _, err := newLocalFleet(fleetSpec{WSURL: tg.wsURL, SourceIPs: []string{"10.0.0.1"}}); !errors.Is(err, errNotLoopback) {
		t.Fatalf("non-loopback source: %v", err)
	}
}

// TestRawConnect: the epoll reader's raw connect reaches an IPv4 target
// from the source address it is given, and an IPv6 one (when the machine
// has ::1), with the port in network byte order.
func TestRawConnect(t *testing.T) {
	for _, c := range []struct{ listen, local, wantFrom string }{
		{"127.0.0.1:0", "127.0.0.5", "127.0.0.5"},
		{"127.0.0.1:0", "", "127.0.0.1"},
		{"[::1]:0", "", "::1"},
	} {
		ln, err := net.Listen("tcp", c.listen)
		if err != nil {
			if c.wantFrom == "::1" {
				t.Logf("no IPv6 loopback here (%v); that case is not run", err)
				continue
			}
			t.Fatal(err)
		}
		fd, err := rawConnect(ln.Addr().String(), net.ParseIP(c.local))
		if err != nil {
			ln.Close()
			t.Fatalf("rawConnect(%s): %v", ln.Addr(), err)
		}
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			syscall.Close(fd)
			t.Fatalf("accept from rawConnect(%s): %v", c.listen, err)
		}
		if got := conn.RemoteAddr().(*net.TCPAddr).IP.String(); got != c.wantFrom {
			t.Errorf("%s: connection from %s, want %s", c.listen, got, c.wantFrom)
		}
		// The connection works both ways once established.
		if _, err := conn.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2)
		deadline := time.Now().Add(5 * time.Second)
		for {
			n, err := rawRead(fd, buf)
			if n == 2 && string(buf) == "ok" {
				break
			}
			if (err != syscall.EAGAIN && err != nil) || time.Now().After(deadline) {
				t.Fatalf("%s: read %d %q %v", c.listen, n, buf[:n], err)
			}
			time.Sleep(time.Millisecond)
		}
		conn.Close()
		syscall.Close(fd)
	}
}

package bench

import (
	"errors"
	"net"
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

//go:build unix

package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/herald-rt/herald/internal/uring"
)

// TestMain lets the test binary act as the second process, which floor
// starts as os.Executable().
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "fanout-reader" || os.Args[1] == "connect-dialer") {
		if err := run(os.Args[1:], os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestFanoutReportsBothSides(t *testing.T) {
	readers := []string{"goroutine"}
	if epollSupported {
		readers = append(readers, "epoll")
	}
	writes := []string{"raw", "go"}
	// io_uring where the kernel has it, and always where CI requires it.
	if r, err := uring.New(1); err == nil || os.Getenv("HERALD_REQUIRE_IO_URING") != "" {
		writes = append(writes, "uring")
		if err == nil {
			r.Close()
		}
	}
	type tc struct{ reader, write string }
	var cases []tc
	for _, reader := range readers {
		for _, write := range writes {
			cases = append(cases, tc{reader, write})
		}
	}
	for _, c := range cases {
		reader := c.reader
		t.Run(reader+"/"+c.write, func(t *testing.T) {
			var out bytes.Buffer
			if err := run([]string{"fanout", "--conns", "50", "--rounds", "2", "--interval", "50ms", "--size", "100", "--reader", reader, "--write", c.write}, &out); err != nil {
				t.Fatal(err)
			}
			// 100 messages: every write of every round was read, none twice.
			for _, want := range []string{"50 sockets × 2 rounds of 100 bytes every 50ms, 2 writers (--write " + c.write + ")", "round (last socket written)", "writer CPU per delivery", "reader CPU per delivery", "(100 messages, --reader " + reader + ")", "delivery latency"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

func TestConnectReportsBothSides(t *testing.T) {
	for _, trips := range []string{"2", "1"} {
		var out bytes.Buffer
		if err := run([]string{"connect", "--conns", "100", "--concurrency", "8", "--round-trips", trips}, &out); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"connect floor: 100 connections, " + trips + " round trip(s) each", "accepting side", "dialing side"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, out.String())
			}
		}
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"fanout", "--conns", "0"}, {"connect", "--conns", "20000"}, {"fanout", "--reader", "poll"}, {"fanout", "--write", "sendmmsg"}, {"fanout", "--write", "uring", "--batch", "0"}, {"fanout", "--interval", "0s"}, {"connect", "--round-trips", "3"}} {
		if err := run(args, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}

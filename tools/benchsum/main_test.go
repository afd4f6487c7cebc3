package main

import (
	"bytes"
	"strings"
	"testing"
)

// round is one scripts/bench run, cut down to the lines benchsum reads (and
// some it must skip), with a floor run appended.
const round = `=== idle18k: herald bench idle --conns 18000 --hold 5s --workers 2 --server-pid 1
herald bench idle
connections      18000/18000 connected in 1.52s = 11836 connects+subscribes/s
server RSS/conn  2.74 KiB at the end of the hold (2.57 KiB right after connecting)
=== fanout50k: herald bench fanout --conns 10000 --rate 5 --payload 100 --duration 10s --server-pid 2
connections          10000/10000 connected in 0.74s = 13426 connects+subscribes/s
deliveries           500000 of 500000 expected  (50684/s)
lost/dup/reord       0 / 0 / 0
latency              p50 37.4ms  p90 64.8ms  p99 78.8ms  p99.9 95.2ms  max 97.8ms  (n=500000)
server CPU/delivery  8.020 µs
generator CPU        3.37s (54.2 µs/connect, 5.114 µs/delivery)
=== saturated: herald bench fanout --conns 10000 --rate 400 --publishers 8 --server-pid 3
publisher lag        fell up to 2.16s behind schedule (counted in latency)
deliveries           32000000 of 32000000 expected  (2896935/s)
lost/dup/reord       0 / 1 / 7390000
latency              p50 1.73s  p90 3.1s  p99 3.38s  p99.9 3.5s  max 3.6s  (n=32000000)
server CPU/delivery  0.325 µs
generator CPU        8.19s (61.5 µs/connect, 0.457 µs/delivery)
=== connecturl: herald bench connect --conns 10000 --concurrency 128 --subscribe-in-url --server-pid 4
connections         10000/10000 connected in 0.51s = 19510 connects+subscribes/s (subscribed in the upgrade request)
server CPU/connect  37.0 µs
=== floor50kuring: tools/floor fanout --conns 10000 --write uring
writer CPU per delivery      5.86µs
reader CPU per delivery      6.28µs (200000 messages, --reader epoll)
delivery latency             p50 29.6ms  p99 68ms  max 77.1ms (received − round start)
=== floorconnect: tools/floor connect --conns 10000 --concurrency 128
accepting side               14835 connections/s, CPU per connection 49.1µs
=== floor50kuring: tools/floor fanout --conns 10000 --write uring
writer CPU per delivery      5.5µs
reader CPU per delivery      6.0µs (200000 messages, --reader epoll)
delivery latency             p50 27.1ms  p99 61ms  max 70.1ms (received − round start)
`

func TestSummary(t *testing.T) {
	secs, err := sections(strings.NewReader(round))
	if err != nil {
		t.Fatal(err)
	}
	if len(secs) != 7 || secs[0].name != "idle18k" || secs[6].name != "floor50kuring" {
		t.Fatalf("sections %+v", secs)
	}
	s := newSummary()
	if missing := s.addRound("r1", secs); len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	want := map[string][]float64{
		"idle18k KiB/conn":                  {2.74},
		"fanout50k p50":                     {37.4},
		"fanout50k p99":                     {78.8},
		"fanout50k server µs/delivery":      {8.02},
		"fanout50k generator µs/delivery":   {5.114},
		"fanout50k lost+dup":                {0},
		"saturated p50":                     {1730}, // seconds become milliseconds
		"saturated p99":                     {3380},
		"saturated lanes behind":            {2160},
		"saturated deliveries/s":            {2896935},
		"saturated lost+dup":                {1}, // reordering is not counted
		"connecturl connects/s":             {19510},
		"connecturl server µs/connect":      {37},
		"floor50kuring p99":                 {68, 61}, // a second floor run counts too
		"floor50kuring writer µs/delivery":  {5.86, 5.5},
		"floorconnect connects/s":           {14835},
		"floorconnect accepting µs/connect": {49.1},
	}
	for key, vals := range want {
		se := s.series[key]
		if se == nil {
			t.Errorf("%s: missing", key)
			continue
		}
		if len(se.values) != len(vals) {
			t.Errorf("%s = %v, want %v", key, se.values, vals)
			continue
		}
		for i := range vals {
			if d := se.values[i] - vals[i]; d > 1e-9 || d < -1e-9 {
				t.Errorf("%s = %v, want %v", key, se.values, vals)
			}
		}
	}
	if _, ok := s.series["fanout50k deliveries/s"]; ok {
		t.Error("a steady fan-out's rate counted as a result")
	}

	var out bytes.Buffer
	s.write(&out, 1)
	for _, line := range []string{
		"idle18k KiB/conn", "target ≤ 4 KiB: 1 of 1",
		"fanout50k p99", "target ≤ 70 ms: 0 of 1",
		"saturated lost+dup", "target none: 0 of 1",
		"floor50kuring p99", "target ≤ 70 ms: 2 of 2",
		"connecturl connects/s                n=1   19510–19510 /s   target ≥ 15k/s: 1 of 1",
		"r1: fanout50k p99 78.8 ms = 1.16× floor50kuring's 68.0 ms",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
}

// TestMissingNumbers: a measurement that did not report (herald did not
// start, or its output changed) is named, not silently left out.
func TestMissingNumbers(t *testing.T) {
	secs, err := sections(strings.NewReader("=== fanout10k: herald did not start on 127.0.0.1:18080; skipped\n=== connect: herald bench connect\nconnections 10/10 connected in 0.01s = 1000 connects+subscribes/s\n"))
	if err != nil {
		t.Fatal(err)
	}
	missing := newSummary().addRound("r", secs)
	for _, want := range []string{"r: fanout10k p99", "r: fanout10k server µs/delivery", "r: connect server µs/connect"} {
		found := false
		for _, m := range missing {
			found = found || m == want
		}
		if !found {
			t.Errorf("missing %v lacks %q", missing, want)
		}
	}
}

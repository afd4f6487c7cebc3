package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGeneratorCPUPerConnectWorkers: generator CPU per connect covers the
// connect phase only, with worker processes too: their start-up and token
// minting, before the phase, are not counted, so the same 20 connections to
// the same server cost about as much "per connect" with two workers as with
// one (several times as much when the phase's starting reading counted the
// workers' CPU as 0).
func TestGeneratorCPUPerConnectWorkers(t *testing.T) {
	url := startServer(t, nil)
	per := map[int]float64{}
	for _, w := range []int{1, 2} {
		cfg := testConfig(url, "connect")
		cfg.Conns = 20
		cfg.Workers = w
		cfg.WorkerExe = os.Args[0]
		r := run(t, cfg)
		if r.Connected != 20 {
			t.Fatalf("connected %d", r.Connected)
		}
		per[w] = r.GeneratorCPUPerConnU
		t.Logf("workers %d: %.1f µs/connect, generator CPU %.3fs in all", w, r.GeneratorCPUPerConnU, r.GeneratorCPUSeconds)
	}
	if per[2] > 3*per[1] {
		t.Fatalf("generator CPU per connect %.1f µs with 2 workers, %.1f µs in one process: the workers' start-up is counted as connect CPU", per[2], per[1])
	}
}

// fakeWorkerEnv makes the test binary a fake worker (see TestMain): it
// speaks the worker protocol with made-up CPU readings and opens no
// connection.
const fakeWorkerEnv = "HERALD_BENCH_FAKE_WORKER=1"

// fakeWorker answers as a worker whose CPU stands at 1 s from start-up to
// its last progress line, and at 3 s when the finish command arrives: the
// work of the last moments before the end (deliveries still arriving when
// the drain gave up) shows in no progress line. Every delivery is reported
// at once, so the drain does not wait.
func fakeWorker(stdin io.Reader, stdout io.Writer) {
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var spec fleetSpec
	if !sc.Scan() || json.Unmarshal(sc.Bytes(), &spec) != nil {
		return
	}
	fmt.Fprintln(stdout, `{"type":"prepared","progress":{"connected":0,"conn_errors":0,"delivered":0,"dropped":0,"p99_ms":0,"cpu_seconds":1}}`)
	for sc.Scan() {
		var c workerCmd
		if json.Unmarshal(sc.Bytes(), &c) != nil {
			continue
		}
		switch c.Cmd {
		case "connect":
			fmt.Fprintf(stdout, `{"type":"ready","progress":{"connected":%d,"conn_errors":0,"delivered":0,"dropped":0,"p99_ms":0,"cpu_seconds":1},"subs":[%d]}`+"\n", spec.Count, spec.Count)
			fmt.Fprintf(stdout, `{"type":"progress","progress":{"connected":%d,"conn_errors":0,"delivered":%d,"dropped":0,"p99_ms":0,"cpu_seconds":1}}`+"\n", spec.Count, int64(1)<<40)
		case "finish":
			var n uint64
			for s := range c.Finish.Published {
				n += (c.Finish.Published[s] - c.Finish.Failed[s]) * uint64(spec.Count)
			}
			fmt.Fprintf(stdout, `{"type":"result","result":{"connected":%d,"connect_start_ns":0,"connect_end_ns":0,"delivered":%d,"lost":0,"duplicated":0,"reordered":0,"late":0,"first_delivery_ns":0,"last_delivery_ns":0,"cpu_seconds":3.5,"cpu_at_finish_seconds":3,"recovery":{},"wire_bytes":0,"message_bytes":0,"compressed_frames":0,"deflate_conns":0}}`+"\n", spec.Count, n)
			return
		}
	}
}

// TestGeneratorCPUPerDeliveryWorkersEndReading: generator CPU per delivery
// covers publishing and the drain. A worker's CPU at the window's end is the
// one it had when the run ended it, not that of its latest progress line (up
// to 250 ms old, while the starting reading, from its ready line, is fresh):
// with fake workers at 1 s in every progress line and 3 s at the end, the
// window counts 2 s of each.
func TestGeneratorCPUPerDeliveryWorkersEndReading(t *testing.T) {
	url := startServer(t, nil)
	script := filepath.Join(t.TempDir(), "worker.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"+fakeWorkerEnv+" exec "+os.Args[0]+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(url, "fanout")
	cfg.Workers = 2
	cfg.WorkerExe = script
	cfg.Conns = 4
	cfg.Rate = 20
	cfg.Duration = 200 * time.Millisecond
	r := run(t, cfg)
	if r.Delivered == 0 || r.Delivered != r.Expected {
		t.Fatalf("delivered %d of %d", r.Delivered, r.Expected)
	}
	if want := 2 * 2e6 / float64(r.Delivered); r.GeneratorCPUPerDelU < want {
		t.Fatalf("generator CPU per delivery %.0f µs, want at least %.0f µs: the workers' CPU at the end of the window is taken from stale progress lines", r.GeneratorCPUPerDelU, want)
	}
}

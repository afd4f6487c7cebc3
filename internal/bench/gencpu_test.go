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
// minting, before the phase, are not counted. Fake workers report what they
// spent (fakeStartupCPU before the phase, fakeConnectCPU in it), so the test
// checks what the run accounted, not how long anything took: the workers'
// connect CPU is in the figure, their start-up is not (counting the phase's
// starting reading as 0 adds thousands of seconds).
func TestGeneratorCPUPerConnectWorkers(t *testing.T) {
	url := startServer(t, nil)
	cfg := testConfig(url, "connect")
	cfg.Conns = 20
	cfg.Workers = 2
	cfg.WorkerExe = fakeWorkerScript(t)
	r := run(t, cfg)
	if r.Connected != 20 {
		t.Fatalf("connected %d", r.Connected)
	}
	counted := r.GeneratorCPUPerConnU * float64(r.Connected) / 1e6 // seconds
	workers := float64(cfg.Workers) * fakeConnectCPU
	// The rest is this process's own CPU while it waited for two ready
	// lines; fakeStartupCPU dwarfs any value it could take.
	if counted < workers || counted > workers+fakeStartupCPU/2 {
		t.Fatalf("generator CPU in the connect phase %.3fs, want the workers' %.3fs plus this process's own: their start-up (%.0fs each) is counted, or their connecting is not", counted, workers, fakeStartupCPU)
	}
}

// fakeWorkerScript writes a worker executable that runs this test binary as
// a fake worker.
func fakeWorkerScript(t *testing.T) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "worker.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"+fakeWorkerEnv+" exec "+os.Args[0]+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

// The CPU a fake worker reports: fakeStartupCPU at its prepared line,
// fakeConnectCPU more at its ready line and every progress line after it,
// and fakeEndCPU more when the finish command arrives.
const (
	fakeStartupCPU = 1000.0
	fakeConnectCPU = 0.25
	fakeEndCPU     = 2.0
)

// fakeWorkerEnv makes the test binary a fake worker (see TestMain): it
// speaks the worker protocol with made-up CPU readings and opens no
// connection.
const fakeWorkerEnv = "HERALD_BENCH_FAKE_WORKER=1"

// fakeWorker answers as a worker whose CPU stands at fakeStartupCPU when it
// is prepared, fakeConnectCPU more from its ready line to its last progress
// line, and fakeEndCPU more when the finish command arrives: the work of the
// last moments before the end (deliveries still arriving when the drain gave
// up) shows in no progress line. Every delivery is reported at once, so the
// drain does not wait.
func fakeWorker(stdin io.Reader, stdout io.Writer) {
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var spec fleetSpec
	if !sc.Scan() || json.Unmarshal(sc.Bytes(), &spec) != nil {
		return
	}
	ready := fakeStartupCPU + fakeConnectCPU
	fmt.Fprintf(stdout, `{"type":"prepared","progress":{"connected":0,"conn_errors":0,"delivered":0,"dropped":0,"p99_ms":0,"cpu_seconds":%g}}`+"\n", fakeStartupCPU)
	for sc.Scan() {
		var c workerCmd
		if json.Unmarshal(sc.Bytes(), &c) != nil {
			continue
		}
		switch c.Cmd {
		case "connect":
			fmt.Fprintf(stdout, `{"type":"ready","progress":{"connected":%d,"conn_errors":0,"delivered":0,"dropped":0,"p99_ms":0,"cpu_seconds":%g},"subs":[%d]}`+"\n", spec.Count, ready, spec.Count)
			fmt.Fprintf(stdout, `{"type":"progress","progress":{"connected":%d,"conn_errors":0,"delivered":%d,"dropped":0,"p99_ms":0,"cpu_seconds":%g}}`+"\n", spec.Count, int64(1)<<40, ready)
		case "finish":
			var n uint64
			for s := range c.Finish.Published {
				n += (c.Finish.Published[s] - c.Finish.Failed[s]) * uint64(spec.Count)
			}
			fmt.Fprintf(stdout, `{"type":"result","result":{"connected":%d,"connect_start_ns":0,"connect_end_ns":0,"delivered":%d,"lost":0,"duplicated":0,"reordered":0,"late":0,"first_delivery_ns":0,"last_delivery_ns":0,"cpu_seconds":%g,"cpu_at_finish_seconds":%g,"recovery":{},"wire_bytes":0,"message_bytes":0,"compressed_frames":0,"deflate_conns":0}}`+"\n", spec.Count, n, ready+fakeEndCPU+0.5, ready+fakeEndCPU)
			return
		}
	}
}

// TestGeneratorCPUPerDeliveryWorkersEndReading: generator CPU per delivery
// covers publishing and the drain. A worker's CPU at the window's end is the
// one it had when the run ended it, not that of its latest progress line (up
// to 250 ms old, while the starting reading, from its ready line, is fresh):
// with fake workers whose CPU grows by fakeEndCPU after their last progress
// line, the window counts at least that much of each.
func TestGeneratorCPUPerDeliveryWorkersEndReading(t *testing.T) {
	url := startServer(t, nil)
	cfg := testConfig(url, "fanout")
	cfg.Workers = 2
	cfg.WorkerExe = fakeWorkerScript(t)
	cfg.Conns = 4
	cfg.Rate = 20
	cfg.Duration = 200 * time.Millisecond
	r := run(t, cfg)
	if r.Delivered == 0 || r.Delivered != r.Expected {
		t.Fatalf("delivered %d of %d", r.Delivered, r.Expected)
	}
	if want := 2 * fakeEndCPU * 1e6 / float64(r.Delivered); r.GeneratorCPUPerDelU < want {
		t.Fatalf("generator CPU per delivery %.0f µs, want at least %.0f µs: the workers' CPU at the end of the window is taken from stale progress lines", r.GeneratorCPUPerDelU, want)
	}
}

package bench

import (
	"os"
	"testing"
)

// TestGeneratorCPUPerConnectWorkers: generator CPU per connect covers
// the connect phase. With worker processes the phase's starting reading is
// taken before any worker has sent a progress line, so it counts their CPU
// as 0, and the figure then includes each worker's whole start-up and token
// minting: the same 20 connections to the same server cost several times as
// much "per connect" with two workers as with one.
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

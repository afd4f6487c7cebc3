package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWorkerCrashIsReported: one of two worker processes is killed
// (SIGKILL) halfway through publishing. Its subscribers' deliveries, in
// deliveries_expected, can be neither delivered nor lost: the report must
// account for them as the failed worker's (table and JSON), and Run must
// fail rather than exit 0 with the crash only in a note.
func TestWorkerCrashIsReported(t *testing.T) {
	url := startServer(t, nil)
	dir := t.TempDir()
	script := filepath.Join(dir, "worker.sh")
	// The first worker started runs under timeout(1), which kills it.
	body := "#!/bin/sh\nif mkdir " + filepath.Join(dir, "first") + " 2>/dev/null; then exec timeout -s KILL 1.5 " + os.Args[0] + " \"$@\"; fi\nexec " + os.Args[0] + " \"$@\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(url, "fanout")
	cfg.Workers = 2
	cfg.WorkerExe = script
	cfg.Conns = 20
	cfg.Rate = 20
	cfg.Duration = 2500 * time.Millisecond
	cfg.Grace = time.Second
	var out strings.Builder
	r, err := Run(t.Context(), cfg, &out, stderrOnFailure(t))
	t.Logf("report:\n%s", out.String())
	if r == nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("err %v: expected %d delivered %d lost %d notes %q", err, r.Expected, r.Delivered, r.Lost, r.Notes)
	if err == nil {
		t.Fatal("Run succeeded although a worker died")
	}
	if r.WorkersFailed != 1 || r.Delivered+r.Lost+r.Unaccounted < r.Expected {
		t.Fatalf("workers failed %d: %d of %d expected deliveries, lost %d, unaccounted %d", r.WorkersFailed, r.Delivered, r.Expected, r.Lost, r.Unaccounted)
	}
	if !strings.Contains(out.String(), "WORKERS FAILED") {
		t.Fatal("the printed report does not say a worker failed")
	}
}

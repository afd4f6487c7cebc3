package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAuditWorkerCrashHidesLoss: one of two worker processes is killed
// (SIGKILL) halfway through publishing. Its subscribers' deliveries are in
// deliveries_expected but neither delivered nor lost: the report says
// "lost 0" while a large share of the expected deliveries never arrived,
// and Run succeeds (exit status 0), the crash only in a note.
func TestAuditWorkerCrashHidesLoss(t *testing.T) {
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
	if err == nil && r.Delivered+r.Lost < r.Expected {
		t.Fatalf("exit 0 with %d of %d expected deliveries and lost %d: %d deliveries are neither delivered nor lost", r.Delivered, r.Expected, r.Lost, r.Expected-r.Delivered-r.Lost)
	}
}

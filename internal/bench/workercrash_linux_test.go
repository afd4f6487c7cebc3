package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/server/servertest"
)

// TestWorkerCrashIsReported: one of two worker processes is killed
// (SIGKILL) halfway through publishing. Its subscribers' deliveries, in
// deliveries_expected, can be neither delivered nor lost: the report must
// account for them as the failed worker's (table and JSON), and Run must
// fail rather than exit 0 with the crash only in a note.
func TestWorkerCrashIsReported(t *testing.T) {
	srv := servertest.Start(t, nil)
	dir := t.TempDir()
	script := filepath.Join(dir, "worker.sh")
	// The first worker started writes its pid, which the test kills once
	// every connection is in and publishing is under way, however long a
	// loaded machine takes to get there.
	pidFile := filepath.Join(dir, "first.pid")
	body := "#!/bin/sh\nif mkdir " + filepath.Join(dir, "first") + " 2>/dev/null; then echo $$ > " + pidFile + "; fi\nexec " + os.Args[0] + " \"$@\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(srv.WSURL(), "fanout")
	cfg.Workers = 2
	cfg.WorkerExe = script
	cfg.Conns = 20
	cfg.Rate = 20
	cfg.Duration = 5 * time.Second
	cfg.Grace = time.Second
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for deadline := time.Now().Add(60 * time.Second); srv.Hub().NumClients() < cfg.Conns && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Second) // into the 5 s of publishing
		b, err := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			t.Errorf("first worker's pid: %q, %v", b, err)
			return
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}()
	var out strings.Builder
	r, err := Run(t.Context(), cfg, &out, stderrOnFailure(t))
	<-killed
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

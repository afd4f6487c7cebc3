package bench

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestServerZombieIsExited: a server that dies but is not yet reaped by its
// parent (a zombie: /proc/PID/status and stat still exist, without VmRSS)
// counts as exited, as one whose /proc entry is gone does: its memory is not
// computed against an RSS of 0, and Run fails. The "server" watched is a
// sleep process killed during the hold and reaped only after Run.
func TestServerZombieIsExited(t *testing.T) {
	url := startServer(t, nil)
	fake := exec.Command("sleep", "60")
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Process.Kill(); _ = fake.Wait() })
	cfg := testConfig(url, "idle")
	cfg.ServerPID = fake.Process.Pid
	cfg.Hold = time.Second
	time.AfterFunc(300*time.Millisecond, func() { _ = fake.Process.Kill() }) // not reaped: a zombie
	var out strings.Builder
	r, err := Run(t.Context(), cfg, &out, stderrOnFailure(t))
	t.Logf("report:\n%s", out.String())
	if err == nil || r == nil || !r.ServerExited {
		t.Fatalf("Run: err %v, server_exited %v, RSS per conn %.2f KiB, RSS at end %d KiB: the dead server is not reported as exited",
			err, r != nil && r.ServerExited, r.RSSPerConnKiB, r.ServerRSSEndKiB)
	}
}

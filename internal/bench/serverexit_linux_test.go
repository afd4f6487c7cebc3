package bench

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestServerExitedDuringRun: when the process named by --server-pid is gone
// before the run ends, the report says so and leaves out the server's CPU
// and memory (rather than computing them against zeros, which gave a
// negative CPU time), and Run returns an error after printing the report.
// The "server" watched here is a sleep process killed during the hold; the
// connections go to a real herald in this process.
func TestServerExitedDuringRun(t *testing.T) {
	url := startServer(t, nil)
	fake := exec.Command("sleep", "60")
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(url, "idle")
	cfg.ServerPID = fake.Process.Pid
	cfg.Hold = time.Second
	go func() {
		time.Sleep(300 * time.Millisecond) // connected by now, holding
		_ = fake.Process.Kill()
		_ = fake.Wait() // reaped: /proc/PID is gone, not a zombie's
	}()
	var out strings.Builder
	r, err := Run(t.Context(), cfg, &out, stderrOnFailure(t))
	t.Logf("report:\n%s", out.String())
	if err == nil || !strings.Contains(err.Error(), "exited during the run") {
		t.Fatalf("Run: %v, want an error saying the server exited", err)
	}
	if r == nil || !r.ServerExited || r.ServerCPUSeconds != 0 || r.RSSPerConnKiB != 0 {
		t.Fatalf("report %+v: want ServerExited and no server CPU or memory figures", r)
	}
	if !strings.Contains(out.String(), "EXITED") {
		t.Fatal("the printed report does not say the server exited")
	}
}

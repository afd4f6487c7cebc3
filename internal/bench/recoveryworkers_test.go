package bench

import (
	"os"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
)

// TestRecoveryWorkersDropOnlyWhilePublishing: the recovery dropper runs
// only while publishing, in worker processes as in one, so every subscriber
// the bench itself dropped is back before the drain ends: none is reported
// as dropped early (lost before the end, by the server's doing).
func TestRecoveryWorkersDropOnlyWhilePublishing(t *testing.T) {
	url := startServer(t, func(c *config.Config) {
		c.Namespaces = append(c.Namespaces, config.Namespace{Prefix: "bench", HistorySize: 10000})
	})
	cfg := testConfig(url, "recovery")
	cfg.Workers = 2
	cfg.WorkerExe = os.Args[0]
	cfg.Duration = time.Second
	cfg.DropEvery = 100 * time.Millisecond
	cfg.DropDown = 300 * time.Millisecond
	r := run(t, cfg)
	if r.Recovery == nil || r.Recovery.Reconnects == 0 {
		t.Skipf("recovery not measured: %v", r.Notes)
	}
	t.Logf("recovery %+v dropped %v lost %d delivered %d of %d", *r.Recovery, r.Dropped, r.Lost, r.Delivered, r.Expected)
	if len(r.Dropped) > 0 {
		t.Fatalf("connections reported dropped early %v: they were the bench's own recovery drops, still reconnecting when the workers finished", r.Dropped)
	}
}

package sparselog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/herald-rt/herald/internal/testnet"
)

// TestOneLinePerReasonPerInterval: a flood of one reason is one line per
// interval, and each line carries the events since the previous one; the
// reasons are counted apart; concurrent events are all counted, once.
func TestOneLinePerReasonPerInterval(t *testing.T) {
	var out testnet.Buffer
	var clock ManualClock
	l := New(slog.New(slog.NewTextHandler(&out, nil)), Interval)
	l.SetClock(clock.Now)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				l.Warn("a refused", "k", "v")
			}
		}()
	}
	wg.Wait()
	l.Info("b refused")
	if got := out.String(); strings.Count(got, "\n") != 2 ||
		!strings.Contains(got, `level=WARN msg="a refused" k=v count=1`) || !strings.Contains(got, `msg="b refused" count=1`) {
		t.Fatalf("want one line per reason:\n%s", got)
	}
	if got := l.Pending("a refused"); got != 7999 {
		t.Fatalf("pending %d, want 7999", got)
	}
	clock.Advance(Interval - 1)
	l.Warn("a refused", "k", "v")
	if strings.Count(out.String(), "\n") != 2 {
		t.Fatalf("a line before the interval passed:\n%s", out.String())
	}
	clock.Advance(1)
	l.Warn("a refused", "k", "v")
	if got := out.String(); !strings.HasSuffix(got, `msg="a refused" k=v count=8001`+"\n") {
		t.Fatalf("the next line does not count the events since the last:\n%s", got)
	}
	var counts []int64
	l.Note("c", 5, func(n int64) { counts = append(counts, n) })
	l.Note("c", 7, func(n int64) { counts = append(counts, n) })
	if len(counts) != 1 || counts[0] != 5 || l.Pending("c") != 7 {
		t.Fatalf("Note: lines %v, pending %d", counts, l.Pending("c"))
	}
}

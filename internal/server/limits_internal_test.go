package server

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/hub"
)

func TestAutoMaxConnections(t *testing.T) {
	for _, c := range []struct {
		fdLimit uint64
		want    int
	}{
		{0, 0},            // unknown: no limit
		{1<<30 + 1, 0},    // practically unlimited
		{100, 50},         // tiny: half
		{1024, 960},       // a common default: 64 kept
		{20000, 18750},    // this machine: a sixteenth kept
		{1 << 20, 983040}, // large
		{1 << 30, 1006632960},
	} {
		if got := autoMaxConnections(c.fdLimit); got != c.want {
			t.Errorf("autoMaxConnections(%d) = %d, want %d", c.fdLimit, got, c.want)
		}
	}
}

// TestConnectionRefusalsAreLoggedSparingly: every refusal is counted and
// answered, and logged at most once per interval with the number refused
// since the last line; the two limits are logged apart.
func TestConnectionRefusalsAreLoggedSparingly(t *testing.T) {
	s, logs, _ := sparseServer(t, func(cfg *config.Config) { cfg.MaxConnections, cfg.MaxUserConnections = 7, 3 })
	for range 5 {
		ref := s.limitRefusal(hub.ErrServerFull, "u1", nil)
		if ref == nil || ref.Status != http.StatusServiceUnavailable || ref.Code != "server_full" {
			t.Fatalf("server full: %+v", ref)
		}
	}
	for range 4 {
		ref := s.limitRefusal(hub.ErrUserFull, "u2", nil)
		if ref == nil || ref.Status != http.StatusTooManyRequests || ref.Code != "user_connection_limit" {
			t.Fatalf("user full: %+v", ref)
		}
	}
	for _, err := range []error{hub.ErrShuttingDown, errors.New("write: broken pipe")} {
		if ref := s.limitRefusal(err, "u3", nil); ref != nil {
			t.Fatalf("%v answered as a limit: %+v", err, ref)
		}
	}
	if got := counterValue(s.metrics.ConnectionsRefused.WithLabelValues("server_full")); got != 5 {
		t.Fatalf("server_full refusals %v, want 5", got)
	}
	if got := counterValue(s.metrics.ConnectionsRefused.WithLabelValues("user_limit")); got != 4 {
		t.Fatalf("user_limit refusals %v, want 4", got)
	}
	out := logs.String()
	if n := strings.Count(out, "upgrade refused"); n != 2 ||
		!strings.Contains(out, "level=WARN msg=\"upgrade refused: the server holds --max-connections connections\" max_connections=7 refused=1") ||
		!strings.Contains(out, "user=u2 max_user_connections=3 refused=1") {
		t.Fatalf("want one line per limit:\n%s", out)
	}
	if full, user := s.sparse.Pending("refused: server full"), s.sparse.Pending("refused: user full"); full != 4 || user != 3 {
		t.Fatalf("waiting for the next lines: %d and %d, want 4 and 3", full, user)
	}
}

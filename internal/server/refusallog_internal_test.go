package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/sparselog"
)

// TestRefusalsAreLoggedSparingly: issue 24's fourth defect. 2,000 upgrades
// with bad tokens wrote 2,000 log lines. Refusals of credentials (each
// reason of a bad token, a bad origin, a bad API key) are logged as the
// connection limits' are: at most one line per reason per interval, with
// the number refused since the last line; each is still answered and
// counted.
func TestRefusalsAreLoggedSparingly(t *testing.T) {
	s, logs, clock := sparseServer(t, func(cfg *config.Config) { cfg.APIKeys = []string{"0123456789abcdef-api"} })
	h := s.Handler()
	do := func(target string, header http.Header) int {
		r := httptest.NewRequest("GET", target, nil)
		for k, v := range header {
			r.Header[k] = v
		}
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for range 2000 {
		if code := do("/ws?token=not.a.token", nil); code != http.StatusUnauthorized {
			t.Fatalf("bad token: %d", code)
		}
	}
	for range 300 {
		if code := do("/ws", nil); code != http.StatusUnauthorized {
			t.Fatalf("no token: %d", code)
		}
		if code := do("/ws", http.Header{"Origin": {"https://evil.example"}}); code != http.StatusForbidden {
			t.Fatalf("bad origin: %d", code)
		}
		r := httptest.NewRequest("GET", "/api/stats", nil)
		r.Header.Set("X-API-Key", "wrong")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("bad API key: %d", w.Code)
		}
	}
	out := logs.String()
	for _, want := range []string{
		`msg="upgrade refused: unauthorized" reason=malformed refused=1`,
		`msg="upgrade refused: unauthorized" reason=missing refused=1`,
		`msg="upgrade refused: origin not allowed" refused=1`,
		`msg="api request refused: bad API key" refused=1`,
	} {
		if strings.Count(out, want) != 1 {
			t.Errorf("want one line %q", want)
		}
	}
	if n := strings.Count(out, "\n"); n != 4 {
		t.Fatalf("%d lines for 2,900 refusals of four reasons, want 4:\n%.2000s", n, out)
	}
	if got := counterValue(s.metrics.AuthFailures.WithLabelValues("malformed")); got != 2000 {
		t.Fatalf("malformed refusals counted %v, want 2000", got)
	}
	// The next line of a reason, an interval later, carries the count since
	// the last one.
	clock.Advance(sparselog.Interval)
	do("/ws?token=not.a.token", nil)
	if !strings.Contains(logs.String(), `reason=malformed refused=2000`) {
		t.Fatalf("the second line does not count the refusals since the first:\n%s", logs.String()[len(out):])
	}
}

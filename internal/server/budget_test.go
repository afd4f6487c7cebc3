package server_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/herald-rt/herald/internal/config"
)

// TestIdempotencyFullIsRefusedNotRepublished: issue 24's first defect over
// the API. With little room for keys, keyed publishes past it are refused
// with 503 idempotency_full (nothing published), and a retry of a key
// inside its window is still answered as a duplicate, however many keyed
// publishes came after it.
func TestIdempotencyFullIsRefusedNotRepublished(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxQueuedBytes = 64 << 10 })
	pub := func(key string) (int, map[string]any) {
		return ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"chat","data":1,"idempotencyKey":%q}`, key))
	}
	status, first := pub("job-17")
	if status != http.StatusOK {
		t.Fatalf("first publish: %d %v", status, first)
	}
	refused := 0
	for i := range 1000 {
		status, m := pub(fmt.Sprint("other-", i))
		switch {
		case status == http.StatusOK:
		case status == http.StatusServiceUnavailable && m["error"] == "idempotency_full":
			refused++
		default:
			t.Fatalf("publish %d: %d %v", i, status, m)
		}
	}
	if refused == 0 {
		t.Fatal("1000 keyed publishes fit in a 16 KiB key budget")
	}
	status, again := pub("job-17")
	if status != http.StatusOK || again["duplicate"] != true || again["offset"] != first["offset"] {
		t.Fatalf("retry of job-17 inside its window: %d %v (first %v)", status, again, first)
	}
	if m := ts.metricsText(); !containsLine(m, fmt.Sprintf("herald_idempotency_refusals_total %d", refused)) {
		t.Fatalf("herald_idempotency_refusals_total is not %d", refused)
	}
}

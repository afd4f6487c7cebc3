package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
)

// rateLimitedServer runs herald with a low per-connection command limit
// (10/s, burst 5) that closes a connection after strikes consecutive
// refusals: a ws publisher at 50/s gets most publications refused.
func rateLimitedServer(t *testing.T, strikes int) string {
	return startServer(t, func(c *config.Config) {
		c.RateLimit = 10
		c.RateBurst = 5
		c.RateLimitStrikes = strikes
	})
}

// TestAuditRateLimitedWSPublisherFalseGraceNote: with a rate-limited ws
// publisher (error frames, no close) every publication the server accepted
// is delivered, yet drain waits for the refused ones too (expected is only
// reduced after it), burns the whole --grace and the report notes that not
// every delivery arrived.
func TestAuditRateLimitedWSPublisherFalseGraceNote(t *testing.T) {
	url := rateLimitedServer(t, 1000)
	cfg := testConfig(url, "fanout")
	cfg.PublishVia, cfg.APIKey = "ws", ""
	cfg.Conns = 10
	cfg.Rate = 50
	cfg.Grace = 3 * time.Second
	r := run(t, cfg)
	t.Logf("lost %d delivered %d expected %d errors %v notes %q wall %.1f", r.Lost, r.Delivered, r.Expected, r.PublishErrors, r.Notes, r.WallSeconds)
	if r.Delivered != r.Expected || r.Lost != 0 {
		t.Fatalf("delivered %d of %d, lost %d", r.Delivered, r.Expected, r.Lost)
	}
	for _, n := range r.Notes {
		if strings.Contains(n, "not every delivery arrived") {
			t.Fatalf("every expected delivery arrived (%d of %d) yet the report says %q (wall %.1fs)", r.Delivered, r.Expected, n, r.WallSeconds)
		}
	}
}

// TestAuditRateLimitedWSPublisherChannelsCountsLoss: docs/performance.md
// says publications the server refused (error frame to a ws publisher) are
// publish errors, not loss; in the channels scenario every refused
// publication is counted lost for each subscriber of its group.
func TestAuditRateLimitedWSPublisherChannelsCountsLoss(t *testing.T) {
	url := rateLimitedServer(t, 1000)
	cfg := testConfig(url, "channels")
	cfg.PublishVia, cfg.APIKey = "ws", ""
	cfg.Conns = 20
	cfg.Rate = 50
	cfg.Grace = 2 * time.Second
	r := run(t, cfg)
	t.Logf("lost %d delivered %d expected %d errors %v notes %q", r.Lost, r.Delivered, r.Expected, r.PublishErrors, r.Notes)
	if r.Lost != 0 {
		t.Fatalf("lost %d (expected %d, delivered %d): the %v refused publications are counted as loss", r.Lost, r.Expected, r.Delivered, r.PublishErrors)
	}
}

// TestAuditRateLimitedWSPublisherCloseCountsLoss: when the server closes a
// ws publisher for repeated rate-limit strikes (4029), the publication that
// triggered the close was refused without an error frame, and it is counted
// as lost by every subscriber instead of as a publish error.
func TestAuditRateLimitedWSPublisherCloseCountsLoss(t *testing.T) {
	url := rateLimitedServer(t, 3)
	cfg := testConfig(url, "fanout")
	cfg.PublishVia, cfg.APIKey = "ws", ""
	cfg.Conns = 10
	cfg.Rate = 50
	cfg.Grace = 2 * time.Second
	r := run(t, cfg)
	t.Logf("lost %d delivered %d expected %d sent %d errors %v notes %q", r.Lost, r.Delivered, r.Expected, r.Published, r.PublishErrors, r.Notes)
	if r.Lost != 0 {
		t.Fatalf("lost %d (expected %d, delivered %d): a publication the server refused by closing the publisher is counted as loss (publish errors %v)", r.Lost, r.Expected, r.Delivered, r.PublishErrors)
	}
}

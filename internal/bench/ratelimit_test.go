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

// TestRateLimitedWSPublisherDrains: with a rate-limited ws publisher (error
// frames, no close) every publication the server accepted is delivered, and
// the drain waits for those only: not for the refused ones, which would burn
// the whole --grace and note that not every delivery arrived.
func TestRateLimitedWSPublisherDrains(t *testing.T) {
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

// TestRateLimitedWSPublisherChannels: publications the server refused (error
// frame to a ws publisher) are publish errors, not loss, in the channels
// scenario too, where each refusal must be matched to its group.
func TestRateLimitedWSPublisherChannels(t *testing.T) {
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

// TestRateLimitedWSPublisherClosed: when the server closes a ws publisher
// for repeated rate-limit strikes (4029), the publication that triggered the
// close was refused without an error frame: it is a publish error, not a
// publication sent whose deliveries every subscriber lost.
func TestRateLimitedWSPublisherClosed(t *testing.T) {
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

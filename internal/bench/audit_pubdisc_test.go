package bench

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/server/servertest"
)

// TestWSPublisherDisconnectedDelivered: when the server closes the ws
// publisher from elsewhere (here POST /api/disconnect; a token expiry or a
// shutdown likewise) while it is publishing, the publication the session
// was running when the close came is published (delivered to every
// subscriber) but its answer is never sent. The publisher refuses every
// unanswered publication at the close, so that one counts as a publish
// error, not sent, and the report shows more deliveries than expected.
func TestWSPublisherDisconnectedDelivered(t *testing.T) {
	srv := servertest.Start(t, func(c *config.Config) { c.RateLimit = 0 })
	bad := 0
	for i := range 8 {
		cfg := testConfig(srv.WSURL(), "fanout")
		cfg.PublishVia, cfg.APIKey = "ws", ""
		cfg.Conns = 10
		cfg.Rate = 1000000
		cfg.Duration = 300 * time.Millisecond
		cfg.Grace = time.Second
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Past the connect phase, into the publishing.
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(120+20*i) * time.Millisecond):
			}
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+srv.Addr+"/api/disconnect", strings.NewReader(`{"userId":"bench-pub-0"}`))
				req.Header.Set("X-API-Key", testAPIKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					var out struct{ Disconnected int }
					_ = json.NewDecoder(resp.Body).Decode(&out)
					resp.Body.Close()
					if out.Disconnected > 0 {
						return
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		r := run(t, cfg)
		cancel()
		<-done
		t.Logf("run %d: sent %d delivered %d expected %d lost %d errors %v", i, r.Published, r.Delivered, r.Expected, r.Lost, r.PublishErrors)
		if r.Delivered > r.Expected {
			bad++
			break
		}
	}
	if bad > 0 {
		t.Fatalf("more deliveries than expected: a publication the server published (and delivered) but whose answer the close cut off counts as refused")
	}
}

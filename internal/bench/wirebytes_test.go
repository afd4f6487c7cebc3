package bench

import (
	"testing"
	"time"
)

// TestWireBytesSameForBothReaders: the same fanout run (fresh server,
// identical deliveries) must report the same wire and message bytes on the
// epoll and goroutine readers: the report counts the frames read after
// subscribing, and neither the setup's frames (connected, the acks) nor the
// server's answer to the run's own closing frame, which the goroutine reader
// may or may not read before its socket closes.
func TestWireBytesSameForBothReaders(t *testing.T) {
	if !epollSupported {
		t.Skip("no epoll reader here")
	}
	got := map[string]*Report{}
	for _, reader := range []string{"goroutine", "epoll"} {
		url := startServer(t, nil)
		cfg := testConfig(url, "fanout")
		cfg.Reader = reader
		cfg.Conns = 20
		cfg.Rate = 4
		cfg.Duration = time.Second
		r := run(t, cfg)
		checkDeliveries(t, r, 20)
		got[reader] = r
	}
	g, e := got["goroutine"], got["epoll"]
	if g.WireBytes != e.WireBytes || g.MessageBytesPerDelivery != e.MessageBytesPerDelivery {
		t.Fatalf("same deliveries, different bytes: goroutine wire %d (%.1f B/delivery, messages %.1f B), epoll wire %d (%.1f B/delivery, messages %.1f B)",
			g.WireBytes, g.WireBytesPerDelivery, g.MessageBytesPerDelivery, e.WireBytes, e.WireBytesPerDelivery, e.MessageBytesPerDelivery)
	}
}

package bench

import (
	"context"
	"testing"
	"time"
)

// TestWSPublisherCloseRace: a ws publisher publishing back to back when the
// server closes it (4029) ends with every publication answered or refused.
// (One that passed publish's check of the close just before the reader
// settled it used to be added to the pending ones afterwards and written,
// settled by nothing: counted as sent, its deliveries as lost.)
func TestWSPublisherCloseRace(t *testing.T) {
	url := rateLimitedServer(t, 1)
	tg, err := parseTarget(url, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := []byte(`{"seq":0}`)
	leaked, runs := 0, 0
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) && runs < 400 {
		runs++
		s, err := newWSSink(ctx, tg, testSecret, 0, time.Minute, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < 100000; n++ {
			if err := s.publish(ctx, 0, "bench:race", data); err != nil {
				break
			}
		}
		select {
		case <-s.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not close the rate-limited publisher")
		}
		s.mu.Lock()
		p := len(s.pending)
		s.mu.Unlock()
		if p > 0 {
			leaked++
			t.Logf("run %d: %d publication(s) still pending after the close was settled (reason %v)", runs, p, s.reason.Load())
		}
		s.close()
		if leaked > 0 {
			break
		}
	}
	if leaked > 0 {
		t.Fatalf("%d of %d publishers closed by the server (4029) kept publications that are neither answered nor refused: counted as sent, their deliveries as lost", leaked, runs)
	}
	t.Logf("%d runs, none leaked", runs)
}

// TestWSPublisherCloseRaceRun: the same through Run: a ws publisher far
// behind its schedule (publishing back to back) is closed with 4029 after the
// burst; no run reports loss (it used to count, in some runs, one
// publication more than the server took as sent: 6 where it took 5).
func TestWSPublisherCloseRaceRun(t *testing.T) {
	url := rateLimitedServer(t, 1)
	bad := 0
	for i := range 5 {
		cfg := testConfig(url, "fanout")
		cfg.PublishVia, cfg.APIKey = "ws", ""
		cfg.Conns = 10
		cfg.Rate = 1000000
		cfg.Duration = 300 * time.Millisecond
		cfg.Grace = time.Second
		r := run(t, cfg)
		t.Logf("run %d: sent %d lost %d delivered %d expected %d errors %v", i, r.Published, r.Lost, r.Delivered, r.Expected, r.PublishErrors)
		if r.Lost != 0 {
			bad++
			break
		}
	}
	if bad > 0 {
		t.Fatalf("%d of the runs report lost deliveries of a publication the server never took (it closed the publisher, 4029)", bad)
	}
}

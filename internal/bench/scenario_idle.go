package bench

import (
	"context"
	"time"
)

// idle: connections subscribe and hold; the server's memory per connection
// is read at the end of the hold.
func init() {
	register(&scenario{
		name: "idle",
		usage: `--conns authenticated connections, each subscribed to --channel; hold for
            --hold; reports server RSS per connection (needs --server-pid) and connect rate`,
		measure: func(ctx context.Context, run *runState, w *window) {
			w.start = sampleOrZero(run.cfg.ServerPID)
			sleepCtx(ctx, run.cfg.Hold)
			w.end = sampleOrZero(run.cfg.ServerPID)
		},
		report: func(run *runState, _ *fleetResult, w *window) {
			if run.cfg.ServerPID != 0 && w.end.rssKiB != 0 {
				run.r.ServerRSSEndKiB = w.end.rssKiB
			}
		},
		serverCost: func(run *runState, m *fleetResult, w *window, cpu time.Duration) {
			perConnectionCost(run, m, w, cpu)
			// Idle connections are measured at the end of the hold: with a
			// hold longer than the server's ping interval that is the steady
			// state, pings answered, not the moment after the storm.
			if r := run.r; r.Connected > 0 && w.end.rssKiB > 0 {
				r.RSSPerConnAfterConnectKiB = r.RSSPerConnKiB
				r.RSSPerConnKiB = float64(w.end.rssKiB-run.before.rssKiB) / float64(r.Connected)
			}
		},
	})
}

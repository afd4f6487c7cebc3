package bench

import (
	"context"
	"time"
)

// connect: a connect storm; its window is the connect phase itself.
func init() {
	register(&scenario{
		name: "connect",
		usage: `open --conns connections as fast as --concurrency dialers can, each waiting
            for connected and subscribed; reports connects+subscribes/s and latency`,
		measure: func(_ context.Context, run *runState, w *window) {
			w.start, w.end = run.before, run.afterConnect
		},
		serverCost: func(run *runState, m *fleetResult, w *window, cpu time.Duration) {
			perConnectionCost(run, m, w, cpu)
			if r := run.r; r.Connected > 0 {
				r.ServerCPUPerConnU = float64(cpu.Microseconds()) / float64(r.Connected)
			}
		},
	})
}

package bench

import (
	"context"
	"errors"
	"fmt"
)

// recovery: subscribers drop and resubscribe with since while publications
// flow; what they recover is checked against what was published.
func init() {
	register(&scenario{
		name: "recovery",
		usage: `subscribers drop and reconnect with "since" while publications flow; needs a
            server with per-channel offsets (reports that clearly when there are none)`,
		publishes: true,
		drops:     true,
		// Recovery reconnects inside the reader, so it uses the goroutine one.
		reader: "goroutine",
		check: func(c *Config) error {
			if c.SubscribeInURL {
				return errors.New("--subscribe-in-url does not apply to recovery (resubscribing with since needs the subscribe command)")
			}
			if c.DropEvery <= 0 || c.DropDown < 0 {
				return errors.New("--drop-every must be > 0 and --drop-down ≥ 0")
			}
			return nil
		},
		prepare: func(ctx context.Context, run *runState) (bool, error) {
			ok, note, err := probeOffsets(ctx, run.cfg, run.t)
			if err != nil {
				return false, fmt.Errorf("recovery probe: %w", err)
			}
			run.r.Notes = append(run.r.Notes, note)
			return ok, nil
		},
		measure: func(ctx context.Context, run *runState, w *window) {
			// The dropper runs while publishing, so that every connection
			// it dropped can be back before the drain ends.
			measurePublishingWith(ctx, run, w, func(on bool) {
				for _, f := range run.fleets {
					f.dropping(on)
				}
			})
		},
		report: func(run *runState, m *fleetResult, _ *window) {
			rc := m.Recovery
			run.r.Recovery = &rc
		},
		serverCost: perDeliveryCost,
	})
}

package bench

import (
	"context"
	"fmt"
	"time"
)

// measurePublishing is the measurement window of the publishing scenarios:
// publish on the schedule, wait for the ws publishers' answers, then for
// the deliveries (at most --grace).
func measurePublishing(ctx context.Context, run *runState, w *window) {
	measurePublishingWith(ctx, run, w, nil)
}

// measurePublishingWith is measurePublishing with during, when not nil,
// called with true before the first publication and false after the last.
func measurePublishingWith(ctx context.Context, run *runState, w *window, during func(on bool)) {
	cfg, r := run.cfg, run.r
	if run.connected == 0 || ctx.Err() != nil {
		return
	}
	subs := subscribersPerStream(run.fleets, cfg.streams())
	sinks, wsSinks, err := makeSinks(ctx, cfg, run.t)
	if err != nil {
		r.Notes = append(r.Notes, "publisher: "+err.Error())
		return
	}
	if during != nil {
		during(true)
	}
	w.start = sampleOrZero(cfg.ServerPID)
	sched := newSchedule(cfg)
	w.pub = runSchedule(ctx, sched, sinks)
	if during != nil {
		during(false)
	}
	if w.pub.cutOff {
		r.Notes = append(r.Notes, fmt.Sprintf("the publisher fell so far behind that it stopped at --duration + --grace (%s) with %d of %d publications unsent: the server cannot take this rate", sched.cutoff, sched.count-w.pub.sent, sched.count))
	}
	// A ws publisher learns what the server refused from its answers, a
	// round trip behind the publications: wait for them, so that the drain
	// waits only for deliveries of what was published.
	deadline := time.Now().Add(cfg.Grace)
	settleWSSinks(ctx, wsSinks, deadline, &w.pub)
	if w.pub.errors["server error frame rate_limited"] > 0 || w.pub.errors["ws publisher: closed by server: 4029"] > 0 {
		r.Notes = append(r.Notes, "the server rate-limited the ws publisher: start it with --rate-limit 0 to publish faster than 100/s per connection")
	}
	w.fin = finishMsg{Published: w.pub.published, Failed: w.pub.failed}
	for s := range subs {
		w.expected += (w.fin.Published[s] - w.fin.Failed[s]) * uint64(subs[s])
	}
	drained := drain(ctx, run.fleets, w.expected, time.Until(deadline))
	w.end = sampleOrZero(cfg.ServerPID)
	for _, s := range sinks {
		s.close()
	}
	if !drained && ctx.Err() == nil {
		r.Notes = append(r.Notes, fmt.Sprintf("not every delivery arrived within --grace %s", cfg.Grace))
	}
}

// subscribersPerStream adds up the fleets' subscribers of each stream.
func subscribersPerStream(fleets []fleet, streams int) []int {
	subs := make([]int, streams)
	for _, f := range fleets {
		for s, n := range f.subscribers() {
			if s < len(subs) {
				subs[s] += n
			}
		}
	}
	return subs
}

// newSchedule is the publication schedule cfg asks for.
func newSchedule(cfg Config) schedule {
	return schedule{
		count:        cfg.publications(),
		interval:     time.Duration(float64(time.Second) / cfg.Rate),
		streams:      cfg.streams(),
		channel:      channelFunc(cfg),
		payload:      cfg.Payload,
		compressible: cfg.Compressible,
		lanes:        cfg.Publishers,
		cutoff:       cfg.Duration + cfg.Grace,
		spin:         cfg.spin(),
	}
}

// settleWSSinks waits (until deadline) for the ws publishers' answers and
// takes what the server refused out of what pub counts as sent.
func settleWSSinks(ctx context.Context, wsSinks []*wsSink, deadline time.Time, pub *pubResult) {
	for _, s := range wsSinks {
		s.settle(ctx, deadline)
		refused, errs := s.refusals()
		for st, n := range refused {
			pub.failed[st] += n
			pub.sent -= n
		}
		for k, v := range errs {
			pub.errors[k] += v
		}
	}
}

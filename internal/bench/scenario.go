package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// scenario is one kind of benchmark. Run does what every scenario shares:
// it connects the fleets, hands the measurement window to measure, collects
// the fleets' results and fills the report (run.go, runreport.go); a
// scenario adds only what is its own. Each lives in a file of its own
// (scenario_*.go) and registers itself with register from an init
// function, so adding a scenario is adding one file.
type scenario struct {
	name string
	// usage is the scenario's paragraph in `herald bench --help`.
	usage string
	// publishes: the scenario publishes on a schedule and reports
	// deliveries, latency and loss.
	publishes bool
	// grouped: connections subscribe in groups of --group-size, one
	// publication stream per group (plus each their own user channel);
	// otherwise all follow --channel, one stream.
	grouped bool
	// drops: the fleets drop connections every --drop-every while
	// publishing, and they resubscribe with since.
	drops bool
	// reader, when not empty, is the receive path the scenario needs,
	// whatever --reader says.
	reader string
	// check, when not nil, checks what only this scenario needs of a Config.
	check func(c *Config) error
	// prepare, when not nil, runs before any connection is made; ok false
	// ends the run with the report as it stands (its notes say why).
	prepare func(ctx context.Context, run *runState) (ok bool, err error)
	// measure runs the measurement window, once the connect phase is over.
	measure func(ctx context.Context, run *runState, w *window)
	// report, when not nil, adds the scenario's own results to run.r.
	report func(run *runState, m *fleetResult, w *window)
	// serverCost reports the server's CPU and memory over the window (cpu)
	// as the scenario counts them: per connection or per delivery.
	serverCost func(run *runState, m *fleetResult, w *window, cpu time.Duration)
}

// scenarios are the registered scenarios, in the order --help lists them.
// register fills it from init functions; it is read-only afterwards.
var scenarios []*scenario

// register adds s; it is called from init functions only.
func register(s *scenario) {
	if s.measure == nil || s.serverCost == nil || scenarioNamed(s.name) != nil {
		panic("bench: scenario " + s.name + " registered twice or without measure and serverCost")
	}
	scenarios = append(scenarios, s)
}

// scenarioNamed returns the scenario called name, or nil.
func scenarioNamed(name string) *scenario {
	i := slices.IndexFunc(scenarios, func(s *scenario) bool { return s.name == name })
	if i < 0 {
		return nil
	}
	return scenarios[i]
}

// ScenarioNames lists the scenarios' names, in registration order.
func ScenarioNames() []string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return names
}

// ScenarioUsage is the scenarios' part of `herald bench --help`.
func ScenarioUsage() string {
	out := ""
	for _, s := range scenarios {
		out += fmt.Sprintf("  %-9s %s\n", s.name, s.usage)
	}
	return out
}

// runState is what one run has made so far, handed to its scenario.
type runState struct {
	cfg    Config
	t      target
	r      *Report
	fleets []fleet
	// before is the server's sample before the connect phase, afterConnect
	// the one after it (zero without --server-pid).
	before, afterConnect procSample
	// connected is how many connections the connect phase made.
	connected int
}

// window is the measurement window a scenario ran.
type window struct {
	start, end procSample // the server's samples at its edges
	pub        pubResult  // what the publisher did (publishing scenarios)
	expected   uint64     // deliveries expected
	fin        finishMsg  // what the fleets settle their loss against
}

// perConnectionCost reports the server's memory per connection (and, for
// connect, CPU per connection), as the idle and connect scenarios count it.
func perConnectionCost(run *runState, m *fleetResult, w *window, cpu time.Duration) {
	r := run.r
	if r.Connected > 0 && run.afterConnect.rssKiB > 0 {
		r.RSSPerConnKiB = float64(run.afterConnect.rssKiB-run.before.rssKiB) / float64(r.Connected)
	}
}

// perDeliveryCost reports the server's CPU per delivery, as the publishing
// scenarios count it.
func perDeliveryCost(run *runState, m *fleetResult, w *window, cpu time.Duration) {
	if m.Delivered > 0 {
		run.r.ServerCPUPerDelivU = float64(cpu.Microseconds()) / float64(m.Delivered)
	}
}

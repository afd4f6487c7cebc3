package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Run executes one benchmark, prints progress to stderr once a second (unless
// Quiet) and the report to stdout, and returns the report. When ctx is
// cancelled (Ctrl-C) it stops what it is doing and reports what it measured
// so far, marked interrupted.
//
// Run is the driver every scenario shares: prepare, connect, the
// scenario's measurement window, finish, report. What a scenario does of its
// own is in its scenario_*.go file.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc := scenarioNamed(cfg.Scenario)
	t, _ := parseTarget(cfg.urls()[0], cfg.APIURL)
	wallStart, genCPU0 := time.Now(), selfCPU()
	run := &runState{cfg: cfg, t: t, r: newReport(cfg, wallStart)}
	r := run.r
	if sc.prepare != nil {
		ok, err := sc.prepare(ctx, run)
		if err != nil {
			return nil, err
		}
		if !ok {
			r.WallSeconds = time.Since(wallStart).Seconds()
			r.GeneratorCPUSeconds = (selfCPU() - genCPU0).Seconds()
			return r, r.Write(stdout, cfg.JSON)
		}
	}
	if err := run.sampleServerBefore(); err != nil {
		return nil, err
	}
	fleets, err := startFleets(ctx, cfg, t, stderr)
	if err != nil {
		return nil, err
	}
	run.fleets = fleets
	finished := false
	defer func() {
		if !finished {
			killWorkers(fleets)
		}
	}()
	stopProgress := startProgress(cfg, fleets, stderr)
	defer stopProgress()

	connSpan, connGen := run.connectPhase(ctx)
	winGen0 := generatorCPU(fleets)
	w := window{fin: finishMsg{Published: make([]uint64, cfg.streams()), Failed: make([]uint64, cfg.streams())}}
	sc.measure(ctx, run, &w)
	// The workers' part of this reading comes with their results: their
	// CPU when the finish command came. Their progress lines are up to
	// 250 ms old, while the window's start (their ready lines) is fresh.
	winGen1 := selfCPU()
	stopProgress()

	results, errs := finishFleets(fleets, w.fin)
	finished = true
	winGen1 += workersCPUAtFinish(fleets, results)
	run.sampleServerEnd()
	m := mergeResults(results)
	run.noteWorkerFailures(errs, w.fin)
	r.Interrupted = ctx.Err() != nil
	fillConnect(r, &m, connSpan)
	if sc.publishes {
		fillPublishing(r, cfg, &m, &w)
	}
	if sc.report != nil {
		sc.report(run, &m, &w)
	}
	fillCompression(r, cfg, &m)
	run.fillServerCost(sc, &m, &w)
	r.GeneratorCPUSeconds = (selfCPU() - genCPU0).Seconds() + workersCPU(results)
	if m.Connected > 0 {
		r.GeneratorCPUPerConnU = float64(connGen.Microseconds()) / float64(m.Connected)
	}
	if m.Delivered > 0 && sc.publishes {
		r.GeneratorCPUPerDelU = (winGen1 - winGen0).Seconds() * 1e6 / float64(m.Delivered)
	}
	r.WallSeconds = time.Since(wallStart).Seconds()
	if err := r.Write(stdout, cfg.JSON); err != nil {
		return r, err
	}
	return r, runError(r, cfg)
}

// sampleServerBefore reads the server (--server-pid) before anything is
// connected; a pid that cannot be read ends the run.
func (run *runState) sampleServerBefore() error {
	if run.cfg.ServerPID == 0 {
		return nil
	}
	s, err := sampleProc(run.cfg.ServerPID)
	if err != nil {
		return fmt.Errorf("--server-pid %d: %w", run.cfg.ServerPID, err)
	}
	run.before = s
	run.r.ServerRSSBeforeKiB = s.rssKiB
	return nil
}

// newReport is the report of a run of cfg begun at start, before anything
// is measured.
func newReport(cfg Config, start time.Time) *Report {
	protocol := ""
	if cfg.Protocol != "ws" {
		protocol = cfg.Protocol
	}
	return &Report{
		Protocol:       protocol,
		Scenario:       cfg.Scenario,
		Target:         targets(cfg),
		Workers:        cfg.Workers,
		Reader:         cfg.reader(),
		SubscribeInURL: cfg.SubscribeInURL,
		StartedAt:      start.UTC().Format(time.RFC3339),
		Conns:          cfg.Conns,
		ServerPID:      cfg.ServerPID,
	}
}

// connectPhase connects every fleet and returns how long it took (by the
// clock here; the fleets' own span is preferred when they report one) and
// the generator's CPU for it. It takes the server's samples around it.
func (run *runState) connectPhase(ctx context.Context) (time.Duration, time.Duration) {
	cfg := run.cfg
	connStart := time.Now()
	if cfg.ServerPID != 0 {
		run.before = sampleOrZero(cfg.ServerPID)
	}
	gen0 := generatorCPU(run.fleets)
	var wg sync.WaitGroup
	for _, f := range run.fleets {
		wg.Add(1)
		go func() { defer wg.Done(); _ = f.connect(ctx) }()
	}
	wg.Wait()
	span := time.Since(connStart)
	gen := generatorCPU(run.fleets) - gen0
	if cfg.ServerPID != 0 {
		run.afterConnect = sampleOrZero(cfg.ServerPID)
		run.r.ServerRSSAfterKiB = run.afterConnect.rssKiB
	}
	for _, f := range run.fleets {
		run.connected += int(f.progress().Connected)
	}
	if run.connected == 0 && ctx.Err() == nil {
		run.r.Notes = append(run.r.Notes, "no connection could be made; see connect errors")
	}
	return span, gen
}

// finishFleets closes every fleet's connections and collects the results.
func finishFleets(fleets []fleet, fin finishMsg) ([]*fleetResult, []error) {
	results := make([]*fleetResult, len(fleets))
	errs := make([]error, len(fleets))
	var wg sync.WaitGroup
	for i, f := range fleets {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = f.finish(fin) }()
	}
	wg.Wait()
	return results, errs
}

// killWorkers ends the worker processes of a run that did not finish.
func killWorkers(fleets []fleet) {
	for _, f := range fleets {
		if rf, ok := f.(*remoteFleet); ok {
			rf.kill()
		}
	}
}

// workersCPUAtFinish is the worker processes' CPU when the finish command
// came (a failed worker's latest progress).
func workersCPUAtFinish(fleets []fleet, results []*fleetResult) time.Duration {
	var d time.Duration
	for i, f := range fleets {
		if _, ok := f.(*remoteFleet); ok {
			cpu := f.progress().CPUSeconds
			if results[i] != nil {
				cpu = results[i].CPUAtFinish
			}
			d += time.Duration(cpu * float64(time.Second))
		}
	}
	return d
}

// workersCPU is the CPU the fleets report in all.
func workersCPU(results []*fleetResult) float64 {
	var cpu float64
	for _, res := range results {
		if res != nil {
			cpu += res.CPUSeconds
		}
	}
	return cpu
}

// sampleServerEnd reads the server once the fleets are done; a server that
// is gone is noted.
func (run *runState) sampleServerEnd() {
	cfg, r := run.cfg, run.r
	if cfg.ServerPID == 0 {
		return
	}
	end, err := sampleProc(cfg.ServerPID)
	if err != nil {
		r.ServerExited = true
		r.Notes = append(r.Notes, fmt.Sprintf("the server (pid %d) exited during the run: its CPU and memory are left out, and what failed after it is its doing", cfg.ServerPID))
	}
	r.ServerRSSEndKiB = end.rssKiB
}

// noteWorkerFailures notes each failed worker; what its subscribers were
// expected to receive went with it, neither delivered nor lost.
func (run *runState) noteWorkerFailures(errs []error, fin finishMsg) {
	r := run.r
	for i, err := range errs {
		if err == nil {
			continue
		}
		r.Notes = append(r.Notes, fmt.Sprintf("worker %d: %v", i, err))
		r.WorkersFailed++
		for s, n := range run.fleets[i].subscribers() {
			if s < len(fin.Published) {
				r.Unaccounted += (fin.Published[s] - fin.Failed[s]) * uint64(n)
			}
		}
	}
}

// runError is the error a finished run returns besides its report.
func runError(r *Report, cfg Config) error {
	switch {
	case r.ServerExited:
		return fmt.Errorf("the server (pid %d) exited during the run", cfg.ServerPID)
	case r.WorkersFailed > 0:
		return fmt.Errorf("%d of %d worker processes failed: their connections' results are missing", r.WorkersFailed, r.Workers)
	case r.Connected == 0 && r.Conns > 0 && !r.Interrupted:
		return errNoConnection
	}
	return nil
}

// errNoConnection ends a run in which not one connection was made: nothing
// was measured (the report's connect errors say why).
var errNoConnection = errors.New("no connection could be made; see the connect errors")

// sourceIPs are the source addresses connections rotate through: on Linux,
// for an IPv4 target, 127.0.0.1–127.0.0.8 (all of 127.0.0.0/8 is local
// there). A source address has about 14,000 ephemeral ports that connect(2)
// prefers (the even half of 32768–60999); once they run short, each connect
// searches the rest and costs the generator 3× the CPU, at about 15,000
// connections to one server port. Rotating through eight addresses keeps
// every one far below that. Elsewhere (macOS has only 127.0.0.1) and for ::1:
// none, and the kernel picks.
func sourceIPs(t target) []string {
	if runtime.GOOS != "linux" || !strings.HasPrefix(t.hostPort, "127.") {
		return nil
	}
	ips := make([]string, 8)
	for k := range ips {
		ips[k] = net.IPv4(127, 0, 0, byte(1+k)).String()
	}
	return ips
}

// targets is the report's target: the WebSocket URL of each node.
func targets(cfg Config) string {
	var out []string
	for _, u := range cfg.urls() {
		t, _ := parseTarget(u, "")
		out = append(out, t.wsURL)
	}
	return strings.Join(out, ",")
}

// specOf is the fleet spec of cfg's connections to t (without the
// split between fleets).
func specOf(cfg Config, t target) fleetSpec {
	spec := fleetSpec{
		Scenario:       cfg.Scenario,
		WSURL:          t.wsURL,
		Secret:         cfg.JWTSecret,
		TokenTTL:       cfg.TokenTTL,
		ReadBuffer:     cfg.ReadBuffer,
		Channel:        cfg.Channel,
		GroupSize:      cfg.GroupSize,
		ConnectTimeout: cfg.ConnectTimeout,
		Compress:       cfg.Compress,
		SubscribeInURL: cfg.SubscribeInURL,
		Reader:         cfg.reader(),
	}
	switch cfg.Protocol {
	case "sse":
		spec.SSEPath = cfg.SSEPath
	case "socketio":
		spec.SIOPath = cfg.SocketIOPath
	}
	sc := scenarioNamed(cfg.Scenario)
	spec.Grouped = sc.grouped
	if sc.drops {
		spec.DropEvery, spec.DropDown = cfg.DropEvery, cfg.DropDown
	}
	spec.SourceIPs = sourceIPs(t)
	return spec
}

// startFleets creates the in-process fleet, or starts the worker processes,
// and splits the connections between them.
func startFleets(ctx context.Context, cfg Config, t target, stderr io.Writer) ([]fleet, error) {
	spec := specOf(cfg, t)
	if cfg.Workers == 1 {
		spec.First, spec.Count, spec.Concurrency = 0, cfg.Conns, cfg.Concurrency
		f, err := newLocalFleet(spec)
		if err != nil {
			return nil, err
		}
		return []fleet{f}, nil
	}
	exe := cfg.WorkerExe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("workers: %w", err)
		}
	}
	fleets := make([]fleet, cfg.Workers)
	errs := make([]error, cfg.Workers)
	var wg sync.WaitGroup
	first := 0
	urls := cfg.urls()
	for k := range cfg.Workers {
		s := spec
		if len(urls) > 1 {
			nt, _ := parseTarget(urls[k%len(urls)], "")
			s.WSURL = nt.wsURL
		}
		s.First = first
		s.Count = cfg.Conns / cfg.Workers
		if k < cfg.Conns%cfg.Workers {
			s.Count++
		}
		first += s.Count
		s.Concurrency = max(1, cfg.Concurrency/cfg.Workers)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := startWorker(ctx, exe, s, stderr)
			if err == nil {
				fleets[k] = f
			}
			errs[k] = err
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			for _, f := range fleets {
				if f != nil {
					f.(*remoteFleet).kill()
				}
			}
			return nil, fmt.Errorf("worker %d: %w", k, err)
		}
	}
	return fleets, nil
}

func channelFunc(cfg Config) func(int) string {
	if scenarioNamed(cfg.Scenario).grouped {
		names := make([]string, cfg.streams())
		for i := range names {
			names[i] = groupChannel(i)
		}
		return func(s int) string { return names[s] }
	}
	return func(int) string { return cfg.Channel }
}

// makeSinks opens the publishing lanes.
func makeSinks(ctx context.Context, cfg Config, t target) ([]sink, []*wsSink, error) {
	sinks := make([]sink, 0, cfg.Publishers)
	var wsSinks []*wsSink
	if cfg.PublishVia == "api" {
		client := newAPIClient(cfg.Publishers, 30*time.Second)
		for range cfg.Publishers {
			sinks = append(sinks, &apiSink{client: client, url: t.apiBase + "/api/publish", key: cfg.APIKey})
		}
		return sinks, nil, nil
	}
	for l := range cfg.Publishers {
		s, err := newWSSink(ctx, t, cfg.JWTSecret, l, cfg.TokenTTL, cfg.ConnectTimeout)
		if err != nil {
			for _, x := range wsSinks {
				x.close()
			}
			return nil, nil, err
		}
		sinks = append(sinks, s)
		wsSinks = append(wsSinks, s)
	}
	return sinks, wsSinks, nil
}

// drain waits until expected deliveries arrived, grace passed, or ctx ends.
func drain(ctx context.Context, fleets []fleet, expected uint64, grace time.Duration) bool {
	deadline := time.Now().Add(grace)
	for {
		var d int64
		for _, f := range fleets {
			d += f.progress().Delivered
		}
		if uint64(d) >= expected {
			return true
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// generatorCPU is the CPU used so far by this process and every worker
// process (as of its latest progress report: its prepared or ready line,
// fresh while it waits for the next command, or one at most 250 ms old).
func generatorCPU(fleets []fleet) time.Duration {
	d := selfCPU()
	for _, f := range fleets {
		if _, ok := f.(*remoteFleet); ok {
			d += time.Duration(f.progress().CPUSeconds * float64(time.Second))
		}
	}
	return d
}

// sampleOrZero samples pid, or returns the zero sample (no time) when
// there is no pid or it cannot be read (the server exited): every figure
// that needs two samples is then left out rather than computed against
// zeros.
func sampleOrZero(pid int) procSample {
	if pid == 0 {
		return procSample{}
	}
	s, err := sampleProc(pid)
	if err != nil {
		return procSample{}
	}
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// startProgress prints one line a second to stderr until the returned
// function is called (it may be called more than once).
func startProgress(cfg Config, fleets []fleet, stderr io.Writer) func() {
	if cfg.Quiet {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		start := time.Now()
		var lastD int64
		lastT := start
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				var p progress
				p99 := 0.0
				for _, f := range fleets {
					var fp progress
					if lf, ok := f.(*localFleet); ok {
						fp = lf.progress()
						fp.P99ms = lf.intervalP99()
					} else {
						fp = f.progress()
					}
					p.Connected += fp.Connected
					p.ConnErrors += fp.ConnErrors
					p.Delivered += fp.Delivered
					p.Dropped += fp.Dropped
					p99 = math.Max(p99, fp.P99ms)
				}
				rate := float64(p.Delivered-lastD) / now.Sub(lastT).Seconds()
				lastD, lastT = p.Delivered, now
				fmt.Fprintf(stderr, "[%5.1fs] conns %d/%d (errors %d, dropped %d)  deliveries/s %.0f  p99 %s\n",
					now.Sub(start).Seconds(), p.Connected, cfg.Conns, p.ConnErrors, p.Dropped, rate, ms(p99))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done); <-stopped })
	}
}

// mergeResults adds up the fleets' results.
func mergeResults(rs []*fleetResult) fleetResult {
	var m fleetResult
	lat, con := newHist(), newHist()
	add := func(dst *map[string]int, src map[string]int) {
		for k, v := range src {
			if *dst == nil {
				*dst = map[string]int{}
			}
			(*dst)[k] += v
		}
	}
	for _, r := range rs {
		if r == nil {
			continue
		}
		m.Connected += r.Connected
		add(&m.ConnectErrors, r.ConnectErrors)
		add(&m.Dropped, r.Dropped)
		add(&m.ErrorFrames, r.ErrorFrames)
		m.ConnectStartNs = earliest(m.ConnectStartNs, r.ConnectStartNs)
		m.ConnectEndNs = max(m.ConnectEndNs, r.ConnectEndNs)
		m.Delivered += r.Delivered
		m.Lost += r.Lost
		m.Duplicated += r.Duplicated
		m.Reordered += r.Reordered
		m.Late += r.Late
		m.Unparsed += r.Unparsed
		m.FirstDeliveryNs = earliest(m.FirstDeliveryNs, r.FirstDeliveryNs)
		m.LastDeliveryNs = max(m.LastDeliveryNs, r.LastDeliveryNs)
		m.CPUSeconds += r.CPUSeconds
		m.WireBytes += r.WireBytes
		m.MessageBytes += r.MessageBytes
		m.CompressedFrames += r.CompressedFrames
		m.DeflateConns += r.DeflateConns
		lat.Merge(importHist(r.LatencyHist))
		con.Merge(importHist(r.ConnectHist))
		m.Recovery.OffsetsSeen += r.Recovery.OffsetsSeen
		m.Recovery.Reconnects += r.Recovery.Reconnects
		m.Recovery.ReconnectFail += r.Recovery.ReconnectFail
		m.Recovery.Recovered += r.Recovery.Recovered
		m.Recovery.NotRecovered += r.Recovery.NotRecovered
		m.Recovery.NoFlag += r.Recovery.NoFlag
	}
	m.LatencyHist = exportHist(lat)
	m.ConnectHist = exportHist(con)
	return m
}

// earliest returns the earlier of two unix-nano times, 0 meaning unset.
func earliest(a, b int64) int64 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

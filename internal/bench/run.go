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
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, _ := parseTarget(cfg.urls()[0], cfg.APIURL)
	wallStart := time.Now()
	genCPU0 := selfCPU()
	r := &Report{
		Scenario:       cfg.Scenario,
		Target:         targets(cfg),
		Workers:        cfg.Workers,
		Reader:         cfg.reader(),
		SubscribeInURL: cfg.SubscribeInURL,
		StartedAt:      wallStart.UTC().Format(time.RFC3339),
		Conns:          cfg.Conns,
		ServerPID:      cfg.ServerPID,
	}

	if cfg.Scenario == "recovery" {
		ok, note, err := probeOffsets(ctx, cfg, t)
		if err != nil {
			return nil, fmt.Errorf("recovery probe: %w", err)
		}
		if !ok {
			r.Notes = append(r.Notes, note)
			r.WallSeconds = time.Since(wallStart).Seconds()
			r.GeneratorCPUSeconds = (selfCPU() - genCPU0).Seconds()
			return r, r.Write(stdout, cfg.JSON)
		}
		r.Notes = append(r.Notes, note)
	}

	var before procSample
	if cfg.ServerPID != 0 {
		s, err := sampleProc(cfg.ServerPID)
		if err != nil {
			return nil, fmt.Errorf("--server-pid %d: %w", cfg.ServerPID, err)
		}
		before = s
		r.ServerRSSBeforeKiB = s.rssKiB
	}

	fleets, err := startFleets(ctx, cfg, t, stderr)
	if err != nil {
		return nil, err
	}
	finished := false
	defer func() {
		if !finished {
			for _, f := range fleets {
				if rf, ok := f.(*remoteFleet); ok {
					rf.kill()
				}
			}
		}
	}()

	stopProgress := startProgress(cfg, fleets, stderr)
	defer stopProgress()

	// Connect phase.
	connStart := time.Now()
	if cfg.ServerPID != 0 {
		before = sampleOrZero(cfg.ServerPID)
	}
	connGen0 := generatorCPU(fleets)
	var wg sync.WaitGroup
	for _, f := range fleets {
		wg.Add(1)
		go func() { defer wg.Done(); _ = f.connect(ctx) }()
	}
	wg.Wait()
	connEnd := time.Now()
	connGen := generatorCPU(fleets) - connGen0
	var afterConnect procSample
	if cfg.ServerPID != 0 {
		afterConnect = sampleOrZero(cfg.ServerPID)
		r.ServerRSSAfterKiB = afterConnect.rssKiB
	}
	connected := 0
	for _, f := range fleets {
		connected += int(f.progress().Connected)
	}
	if connected == 0 && ctx.Err() == nil {
		r.Notes = append(r.Notes, "no connection could be made; see connect errors")
	}

	// Measurement phase.
	var winStart, winEnd procSample
	winGen0 := generatorCPU(fleets)
	fin := finishMsg{Published: make([]uint64, cfg.streams()), Failed: make([]uint64, cfg.streams())}
	var pub pubResult
	var expected uint64
	switch cfg.Scenario {
	case "idle":
		winStart = sampleOrZero(cfg.ServerPID)
		sleepCtx(ctx, cfg.Hold)
		winEnd = sampleOrZero(cfg.ServerPID)
	case "connect":
		winStart, winEnd = before, afterConnect
	default:
		if connected == 0 || ctx.Err() != nil {
			break
		}
		subs := make([]int, cfg.streams())
		for _, f := range fleets {
			for s, n := range f.subscribers() {
				if s < len(subs) {
					subs[s] += n
				}
			}
		}
		sinks, wsSinks, err := makeSinks(ctx, cfg, t)
		if err != nil {
			r.Notes = append(r.Notes, "publisher: "+err.Error())
			break
		}
		// The recovery dropper runs while publishing, so that every
		// connection it dropped can be back before the drain ends.
		dropping := func(on bool) {
			if cfg.Scenario == "recovery" {
				for _, f := range fleets {
					f.dropping(on)
				}
			}
		}
		dropping(true)
		winStart = sampleOrZero(cfg.ServerPID)
		sched := schedule{
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
		pub = runSchedule(ctx, sched, sinks)
		dropping(false)
		if pub.cutOff {
			r.Notes = append(r.Notes, fmt.Sprintf("the publisher fell so far behind that it stopped at --duration + --grace (%s) with %d of %d publications unsent: the server cannot take this rate", sched.cutoff, sched.count-pub.sent, sched.count))
		}
		// A ws publisher learns what the server refused from its answers,
		// a round trip behind the publications: wait for them, so that
		// the drain waits only for deliveries of what was published.
		deadline := time.Now().Add(cfg.Grace)
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
		if pub.errors["server error frame rate_limited"] > 0 || pub.errors["ws publisher: closed by server: 4029"] > 0 {
			r.Notes = append(r.Notes, "the server rate-limited the ws publisher: start it with --rate-limit 0 to publish faster than 100/s per connection")
		}
		fin = finishMsg{Published: pub.published, Failed: pub.failed}
		for s := range subs {
			expected += (fin.Published[s] - fin.Failed[s]) * uint64(subs[s])
		}
		drained := drain(ctx, fleets, expected, time.Until(deadline))
		winEnd = sampleOrZero(cfg.ServerPID)
		for _, s := range sinks {
			s.close()
		}
		if !drained && ctx.Err() == nil {
			r.Notes = append(r.Notes, fmt.Sprintf("not every delivery arrived within --grace %s", cfg.Grace))
		}
	}
	// The workers' part of this reading comes with their results: their
	// CPU when the finish command came. Their progress lines are up to
	// 250 ms old, while the window's start (their ready lines) is fresh.
	winGen1 := selfCPU()
	stopProgress()

	// Finish: close connections and collect.
	results := make([]*fleetResult, len(fleets))
	errs := make([]error, len(fleets))
	for i, f := range fleets {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = f.finish(fin) }()
	}
	wg.Wait()
	finished = true
	for i, f := range fleets {
		if _, ok := f.(*remoteFleet); ok {
			cpu := f.progress().CPUSeconds // a failed worker's latest
			if results[i] != nil {
				cpu = results[i].CPUAtFinish
			}
			winGen1 += time.Duration(cpu * float64(time.Second))
		}
	}
	var endSample procSample
	if cfg.ServerPID != 0 {
		var err error
		if endSample, err = sampleProc(cfg.ServerPID); err != nil {
			r.ServerExited = true
			r.Notes = append(r.Notes, fmt.Sprintf("the server (pid %d) exited during the run: its CPU and memory are left out, and what failed after it is its doing", cfg.ServerPID))
		}
		r.ServerRSSEndKiB = endSample.rssKiB
		if cfg.Scenario == "idle" && winEnd.rssKiB != 0 {
			r.ServerRSSEndKiB = winEnd.rssKiB
		}
	}
	m := mergeResults(results)
	for i, err := range errs {
		if err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("worker %d: %v", i, err))
			r.WorkersFailed++
			// Its subscribers' accounting went with it: what they were
			// expected to receive is neither delivered nor lost.
			for s, n := range fleets[i].subscribers() {
				if s < len(fin.Published) {
					r.Unaccounted += (fin.Published[s] - fin.Failed[s]) * uint64(n)
				}
			}
		}
	}

	r.Interrupted = ctx.Err() != nil
	r.Connected = m.Connected
	r.ConnectErrors = m.ConnectErrors
	r.Dropped = m.Dropped
	r.ErrorFrames = m.ErrorFrames
	span := time.Duration(m.ConnectEndNs - m.ConnectStartNs)
	if span <= 0 {
		span = connEnd.Sub(connStart)
	}
	r.ConnectSeconds = span.Seconds()
	if span > 0 {
		r.ConnectRate = float64(m.Connected) / span.Seconds()
	}
	if h := importHist(m.ConnectHist); h.TotalCount() > 0 {
		l := summarize(h)
		r.ConnectLatency = &l
	}
	if cfg.publishes() {
		r.Rate = cfg.Rate
		r.PayloadBytes = cfg.Payload
		r.PublishVia = cfg.PublishVia
		r.Publishers = cfg.Publishers
		r.Scheduled = cfg.publications()
		r.Published = pub.sent
		r.PublishErrors = nonEmpty(pub.errors)
		r.PublisherBehindMax = float64(pub.behindMax) / float64(time.Millisecond)
		if pub.late != nil && pub.late.TotalCount() > 0 {
			l := summarize(pub.late)
			r.PublisherLate = &l
		}
		r.SpinMS = float64(cfg.spin()) / float64(time.Millisecond)
		if !pub.start.IsZero() {
			r.PublishSeconds = pub.end.Sub(pub.start).Seconds()
		}
		r.Expected = expected
		r.Delivered = m.Delivered
		r.Lost = m.Lost
		r.Duplicated = m.Duplicated
		r.Reordered = m.Reordered
		r.Late = m.Late
		r.Unparsed = m.Unparsed
		if h := importHist(m.LatencyHist); h.TotalCount() > 0 {
			l := summarize(h)
			r.Latency = &l
		}
		if !pub.start.IsZero() && m.LastDeliveryNs > pub.start.UnixNano() {
			end := max(m.LastDeliveryNs, pub.end.UnixNano())
			r.DeliveriesPerSec = float64(m.Delivered) / time.Duration(end-pub.start.UnixNano()).Seconds()
		}
		r.Compressible = cfg.Compressible
		r.WireBytes = m.WireBytes
		if m.Delivered > 0 {
			r.WireBytesPerDelivery = float64(m.WireBytes) / float64(m.Delivered)
			r.MessageBytesPerDelivery = float64(m.MessageBytes) / float64(m.Delivered)
		}
		if cfg.Compress && !cfg.Compressible && cfg.Payload >= 512 {
			r.Notes = append(r.Notes, "--compress without --compressible: the default pad is a run of 'x', which deflates unrealistically well")
		}
		if cfg.Publishers > 1 && m.Reordered > 0 {
			r.Notes = append(r.Notes, "with --publishers > 1, publications of different lanes may reach the server out of order: reordering is expected")
		}
	}
	if cfg.Scenario == "recovery" {
		rc := m.Recovery
		r.Recovery = &rc
	}
	if cfg.Compress {
		r.Compression = &Compression{Offered: true, AcceptedConns: m.DeflateConns, CompressedFrames: m.CompressedFrames}
		switch {
		case m.Connected > 0 && m.DeflateConns == 0:
			r.Notes = append(r.Notes, "the server did NOT accept permessage-deflate (offered with --compress): every delivery was uncompressed")
		case m.DeflateConns < m.Connected:
			r.Notes = append(r.Notes, fmt.Sprintf("the server accepted permessage-deflate on only %d of %d connections", m.DeflateConns, m.Connected))
		}
	}
	if cfg.ServerPID != 0 && !winStart.at.IsZero() && !winEnd.at.IsZero() {
		cpu := winEnd.cpu - winStart.cpu
		wall := winEnd.at.Sub(winStart.at)
		r.ServerCPUSeconds = cpu.Seconds()
		if wall > 0 {
			r.ServerCPUPercent = 100 * cpu.Seconds() / wall.Seconds()
		}
		switch cfg.Scenario {
		case "idle", "connect":
			if r.Connected > 0 && afterConnect.rssKiB > 0 {
				r.RSSPerConnKiB = float64(afterConnect.rssKiB-before.rssKiB) / float64(r.Connected)
			}
			// Idle connections are measured at the end of the hold: with a
			// hold longer than the server's ping interval that is the steady
			// state, pings answered, not the moment after the storm.
			if cfg.Scenario == "idle" && r.Connected > 0 && winEnd.rssKiB > 0 {
				r.RSSPerConnAfterConnectKiB = r.RSSPerConnKiB
				r.RSSPerConnKiB = float64(winEnd.rssKiB-before.rssKiB) / float64(r.Connected)
			}
			if cfg.Scenario == "connect" && r.Connected > 0 {
				r.ServerCPUPerConnU = float64(cpu.Microseconds()) / float64(r.Connected)
			}
		default:
			if m.Delivered > 0 {
				r.ServerCPUPerDelivU = float64(cpu.Microseconds()) / float64(m.Delivered)
			}
		}
		if cpu < 200*time.Millisecond && cfg.publishes() {
			r.Notes = append(r.Notes, "server CPU is read from /proc in 10 ms ticks: short windows make per-delivery CPU imprecise")
		}
	}
	var workerCPU float64
	for _, res := range results {
		if res != nil {
			workerCPU += res.CPUSeconds
		}
	}
	r.GeneratorCPUSeconds = (selfCPU() - genCPU0).Seconds() + workerCPU
	if m.Connected > 0 {
		r.GeneratorCPUPerConnU = float64(connGen.Microseconds()) / float64(m.Connected)
	}
	if m.Delivered > 0 && cfg.publishes() {
		r.GeneratorCPUPerDelU = (winGen1 - winGen0).Seconds() * 1e6 / float64(m.Delivered)
	}
	r.WallSeconds = time.Since(wallStart).Seconds()
	if err := r.Write(stdout, cfg.JSON); err != nil {
		return r, err
	}
	switch {
	case r.ServerExited:
		return r, fmt.Errorf("the server (pid %d) exited during the run", cfg.ServerPID)
	case r.WorkersFailed > 0:
		return r, fmt.Errorf("%d of %d worker processes failed: their connections' results are missing", r.WorkersFailed, r.Workers)
	case r.Connected == 0 && r.Conns > 0 && !r.Interrupted:
		return r, errNoConnection
	}
	return r, nil
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

// startFleets creates the in-process fleet, or starts the worker processes,
// and splits the connections between them.
func startFleets(ctx context.Context, cfg Config, t target, stderr io.Writer) ([]fleet, error) {
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
	if cfg.Scenario == "recovery" {
		spec.DropEvery, spec.DropDown = cfg.DropEvery, cfg.DropDown
	}
	spec.SourceIPs = sourceIPs(t)
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
	if cfg.Scenario == "channels" {
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

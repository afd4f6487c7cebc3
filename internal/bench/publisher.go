package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"

	"github.com/herald-rt/herald/internal/auth"
)

// sink sends one publication (of stream) to channel. Each publishing lane
// owns one sink.
type sink interface {
	publish(ctx context.Context, stream int, channel string, data []byte) error
	close()
}

// schedule describes the publications: count of them, one every interval
// from start, spread round-robin over streams.
type schedule struct {
	count    uint64
	interval time.Duration
	streams  int
	channel  func(stream int) string
	payload  int
	// compressible selects appendCompressible's data over the 'x' pad.
	compressible bool
	lanes        int
	// cutoff bounds publishing: publications not sent by then are dropped
	// from the run (a publisher far behind schedule would otherwise run on).
	cutoff time.Duration
	// spin is how long before a due time the lane stops sleeping and spins
	// until it (see waitUntil); 0 sleeps on the timer all the way.
	spin time.Duration
}

// pubResult is what a publishing run did.
type pubResult struct {
	start, end time.Time
	published  []uint64 // per stream: seqs scheduled (0 … n-1)
	failed     []uint64 // per stream: scheduled but refused or never sent
	sent       uint64
	errors     map[string]int
	behindMax  time.Duration           // how far the publisher fell behind its schedule, at worst
	late       *hdrhistogram.Histogram // per publication: how late it went out, µs
	cutOff     bool                    // publishing stopped at the cutoff with publications unsent
}

// runSchedule publishes on a fixed schedule: publication i is due at
// start + i*interval and carries that intended time, however late it is
// actually sent (no coordinated omission). Lane l sends publications
// i ≡ l (mod lanes) in order. It stops when all are sent or ctx is done.
func runSchedule(ctx context.Context, s schedule, sinks []sink) pubResult {
	lanes := len(sinks)
	sr := &scheduleRun{
		s: s, sinks: sinks, ctx: ctx, pctx: ctx,
		res: pubResult{
			published: make([]uint64, s.streams),
			failed:    make([]uint64, s.streams),
			errors:    map[string]int{},
		},
		attempted: make([][]uint64, lanes),
		counts:    make([][]uint64, lanes),
		behind:    make([]time.Duration, lanes),
		late:      make([]*hdrhistogram.Histogram, lanes),
	}
	sr.start = time.Now().Add(20 * time.Millisecond)
	sr.cutoff = sr.start.Add(s.cutoff)
	sr.res.start = sr.start
	// A publication still going out at the cutoff (a server that stopped
	// reading) ends with it: sinks bound their requests and writes by pctx.
	if s.cutoff > 0 {
		var cancel context.CancelFunc
		sr.pctx, cancel = context.WithDeadline(ctx, sr.cutoff)
		defer cancel()
	}
	var wg sync.WaitGroup
	for l := range lanes {
		sr.attempted[l] = make([]uint64, s.streams)
		sr.counts[l] = make([]uint64, s.streams)
		sr.late[l] = newHist()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sr.lane(l)
		}()
	}
	wg.Wait()
	return sr.result()
}

// scheduleRun is one runSchedule: its lanes write their own slots of the
// per-lane slices, and res's failures and errors under mu.
type scheduleRun struct {
	s             schedule
	sinks         []sink
	ctx, pctx     context.Context // the run's; pctx also ends at the cutoff
	start, cutoff time.Time
	mu            sync.Mutex
	res           pubResult
	sent          atomic.Uint64
	cut           atomic.Bool
	attempted     [][]uint64 // per lane, per stream: highest seq+1
	counts        [][]uint64 // per lane, per stream: how many it sent
	behind        []time.Duration
	late          []*hdrhistogram.Histogram
}

// lane sends lane l's publications in order until all are sent, ctx is
// done or the cutoff passes.
func (sr *scheduleRun) lane(l int) {
	s, lanes := sr.s, uint64(len(sr.sinks))
	buf := make([]byte, 0, s.payload+64)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := uint64(l); i < s.count; i += lanes {
		due := sr.start.Add(time.Duration(i) * s.interval)
		if !sr.await(l, timer, due) {
			return
		}
		recordUS(sr.late[l], time.Since(due).Microseconds())
		stream := int(i % uint64(s.streams))
		seq := i / uint64(s.streams)
		buf = appendPayloadKind(buf[:0], seq, due.UnixNano(), s.payload, s.compressible)
		if !sr.publish(l, stream, seq, buf) {
			return
		}
	}
}

// await waits for due, or notes how far behind lane l is; false when the
// lane must stop (ctx done, or past the cutoff).
func (sr *scheduleRun) await(l int, timer *time.Timer, due time.Time) bool {
	d := time.Until(due)
	switch {
	case d > 0:
		return waitUntil(sr.ctx, timer, due, sr.s.spin)
	case sr.ctx.Err() != nil:
		return false
	case sr.s.cutoff > 0 && time.Now().After(sr.cutoff):
		sr.cut.Store(true)
		return false
	}
	sr.behind[l] = max(sr.behind[l], -d)
	return true
}

// publish sends one publication on lane l; false when the lane must stop
// (interrupted or cut off mid-request).
func (sr *scheduleRun) publish(l, stream int, seq uint64, payload []byte) bool {
	sr.attempted[l][stream] = seq + 1
	sr.counts[l][stream]++
	err := sr.sinks[l].publish(sr.pctx, stream, sr.s.channel(stream), payload)
	switch {
	case err == nil:
		sr.sent.Add(1)
	case sr.pctx.Err() != nil:
		// Interrupted or cut off mid-request: it may or may not have gone
		// out.
		sr.counts[l][stream]--
		if sr.ctx.Err() == nil {
			sr.cut.Store(true)
		}
		return false
	default:
		sr.mu.Lock()
		sr.res.failed[stream]++
		sr.res.errors[err.Error()]++
		sr.mu.Unlock()
	}
	return true
}

// result sums the lanes up, once they are done.
func (sr *scheduleRun) result() pubResult {
	res := sr.res
	res.end = time.Now()
	res.sent = sr.sent.Load()
	res.cutOff = sr.cut.Load()
	for st := range sr.s.streams {
		var hi, n uint64
		for l := range sr.sinks {
			hi = max(hi, sr.attempted[l][st])
			n += sr.counts[l][st]
		}
		res.published[st] = hi
		// Seqs below the highest that no lane sent (stopped early) count as
		// not published for loss accounting.
		res.failed[st] += hi - n
	}
	res.late = newHist()
	for l := range sr.sinks {
		res.behindMax = max(res.behindMax, sr.behind[l])
		res.late.Merge(sr.late[l])
	}
	return res
}

// waitUntil blocks until due, or returns false when ctx is done first. Go's
// timers fire up to a millisecond late on Linux (the runtime sleeps in whole
// milliseconds; how late: docs/performance.md), and every delivery of a
// publication sent late is measured from its due time. So with spin > 0 the timer only runs until spin before due,
// and the lane then yields in a loop until due: publications go out within
// microseconds of their time, for about spin of CPU each.
func waitUntil(ctx context.Context, timer *time.Timer, due time.Time, spin time.Duration) bool {
	if d := time.Until(due) - spin; d > 0 {
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		}
	}
	for spin > 0 && time.Now().Before(due) {
		if ctx.Err() != nil {
			return false
		}
		runtime.Gosched()
	}
	return ctx.Err() == nil
}

// apiSink publishes with POST /api/publish.
type apiSink struct {
	client *http.Client
	url    string
	key    string
	body   []byte
}

func newAPIClient(lanes int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:         loopbackDialer(nil, timeout),
		MaxIdleConnsPerHost: lanes,
		MaxConnsPerHost:     lanes,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		Proxy:               nil,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

func (a *apiSink) publish(ctx context.Context, _ int, channel string, data []byte) error {
	b := append(a.body[:0], `{"channel":"`...)
	b = append(b, channel...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	b = append(b, '}')
	a.body = b
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", a.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("api: " + classifyErr(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("api: HTTP %d", resp.StatusCode)
	}
	return nil
}

func (a *apiSink) close() {}

// wsSink publishes with client "message" frames over one WebSocket. Each
// carries an id, so the server answers every one, in the order sent:
// published, or an error frame (rate_limited carries no id), or, for the one
// past --rate-limit-strikes and all after it, nothing but its close (4029).
// The reader matches each answer to the oldest publication still without
// one, so that a refused publication is a publish error of its stream, not
// loss.
type wsSink struct {
	c      *wsConn
	buf    []byte
	next   uint64    // the next publication's id
	wdl    time.Time // the write deadline set on c
	stop   func() bool
	closed chan struct{}
	done   atomic.Bool
	reason atomic.Value // string: why the server closed it

	mu      sync.Mutex
	ended   bool     // the connection's end was settled: publish refuses
	pending []int    // streams of the publications not answered yet, oldest first
	refused []uint64 // per stream: publications the server refused
	errs    map[string]int
}

func newWSSink(ctx context.Context, t target, secret string, lane int, ttl, timeout time.Duration) (*wsSink, error) {
	tok, err := auth.Mint([]byte(secret), auth.Identity{UserID: "bench-pub-" + strconv.Itoa(lane)}, ttl)
	if err != nil {
		return nil, err
	}
	c, err := dialWS(ctx, t, tok, nil, 4096, timeout, uint64(time.Now().UnixNano())+uint64(lane), false)
	if err != nil {
		return nil, fmt.Errorf("publisher connection: %w", err)
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	op, p, err := c.readFrame()
	if err != nil || op != ws.OpText || string(frameType(p)) != "connected" {
		_ = c.nc.Close()
		return nil, fmt.Errorf("publisher connection: no connected frame (%v)", err)
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	s := &wsSink{c: c, errs: map[string]int{}, closed: make(chan struct{})}
	// Ctrl-C ends a write blocked on a server that stopped reading.
	s.stop = context.AfterFunc(ctx, func() {
		s.done.Store(true)
		_ = c.nc.Close()
	})
	go s.read()
	return s, nil
}

func (s *wsSink) read() {
	defer close(s.closed)
	for {
		op, p, err := s.c.readFrame()
		if err != nil {
			if !s.done.Load() {
				s.reason.Store("read: " + shortErr(err))
				s.unanswered()
			}
			return
		}
		switch op {
		case ws.OpPing:
			_ = s.c.writeFrame(ws.OpPong, p)
		case ws.OpClose:
			if !s.done.Load() {
				s.reason.Store("closed by server: " + strconv.Itoa(closeCode(p)))
				s.unanswered()
			}
			return
		case ws.OpText:
			switch string(frameType(p)) {
			case "published":
				s.answer("")
			case "error":
				s.answer("server error frame " + string(stringField(p, "code")))
			}
		}
	}
}

// answer settles the oldest unanswered publication: accepted, or refused
// for reason.
func (s *wsSink) answer(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		if reason != "" {
			s.errs[reason]++ // an error that answers no publication
		}
		return
	}
	st := s.pending[0]
	s.pending = s.pending[1:]
	if reason != "" {
		s.refuse(st, reason)
	}
}

// unanswered settles every publication still without an answer when the
// connection ended, as refused, and makes publish refuse any after it. A
// 4029 close follows the answers to every publication the server read and
// refuses the one that drew it, so this is exact. A close made elsewhere
// (a disconnect, a shutdown, an expired token) can cut off the answer to
// the one publication the server was running, which is then delivered
// though counted refused: delivered can exceed expected by that one's
// deliveries. Counting the unanswered ones as sent instead would call
// every publication still unread in the socket lost.
func (s *wsSink) unanswered() {
	r, _ := s.reason.Load().(string)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	for _, st := range s.pending {
		s.refuse(st, "ws publisher: "+r)
	}
	s.pending = nil
}

// refuse counts a refused publication of stream st; s.mu is held.
func (s *wsSink) refuse(st int, reason string) {
	for len(s.refused) <= st {
		s.refused = append(s.refused, 0)
	}
	s.refused[st]++
	s.errs[reason]++
}

func (s *wsSink) publish(ctx context.Context, stream int, channel string, data []byte) error {
	if d, ok := ctx.Deadline(); ok && !d.Equal(s.wdl) {
		s.wdl = d
		_ = s.c.nc.SetWriteDeadline(d)
	}
	b := append(s.buf[:0], `{"type":"message","channel":"`...)
	b = append(b, channel...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	b = append(b, `,"id":`...)
	b = strconv.AppendUint(b, s.next, 10)
	b = append(b, '}')
	s.buf = b
	s.next++
	// Pending before it is written: the answer may come before the write
	// returns. Under the lock that settles the connection's end, so that a
	// publication is either pending when the end is settled or refused here.
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		r, _ := s.reason.Load().(string)
		return errors.New("ws publisher: " + r)
	}
	s.pending = append(s.pending, stream)
	s.mu.Unlock()
	if err := s.c.writeText(b); err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.pending) == 0 {
			return nil // the reader settled it already, with the connection
		}
		s.pending = s.pending[:len(s.pending)-1]
		return errors.New("ws publisher: write failed")
	}
	return nil
}

// settle waits until every publication has its answer, the connection has
// ended, ctx is done or deadline passes.
func (s *wsSink) settle(ctx context.Context, deadline time.Time) {
	for {
		s.mu.Lock()
		n := len(s.pending)
		s.mu.Unlock()
		if n == 0 || ctx.Err() != nil || time.Now().After(deadline) {
			return
		}
		select {
		case <-s.closed:
			return
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// refusals returns the publications the server refused, per stream, and
// the reasons it gave: for those and for errors that answered none.
func (s *wsSink) refusals() ([]uint64, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.refused...), nonEmpty(s.errs)
}

func (s *wsSink) close() {
	s.stop()
	s.done.Store(true)
	s.c.close(ws.StatusNormalClosure)
	<-s.closed
}

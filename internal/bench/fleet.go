package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"

	"github.com/herald-rt/herald/internal/auth"
)

// fleetSpec tells one fleet (in-process, or one worker process) which
// connections to open and how.
type fleetSpec struct {
	Scenario string `json:"scenario"`
	// Grouped: connection i subscribes to group i/GroupSize and its own
	// user channel, and tracks the group's stream (else Channel, stream 0).
	Grouped     bool          `json:"grouped,omitempty"`
	WSURL       string        `json:"ws_url"`
	Secret      string        `json:"secret"`
	TokenTTL    time.Duration `json:"token_ttl"`
	First       int           `json:"first"` // connection indices [First, First+Count)
	Count       int           `json:"count"`
	Concurrency int           `json:"concurrency"`
	// SourceIPs are the loopback source addresses; connection i binds
	// SourceIPs[i%len]. Empty: the kernel picks (127.0.0.1 for 127.x).
	SourceIPs      []string      `json:"source_ips,omitempty"`
	ReadBuffer     int           `json:"read_buffer"`
	Channel        string        `json:"channel"`
	GroupSize      int           `json:"group_size"`
	ConnectTimeout time.Duration `json:"connect_timeout"`
	Compress       bool          `json:"compress,omitempty"` // offer permessage-deflate
	// SubscribeInURL: subscribe through the upgrade request's subscribe
	// parameter instead of commands.
	SubscribeInURL bool `json:"subscribe_in_url,omitempty"`
	// Reader is the receive path: "epoll" (receive loops, Linux) or
	// "goroutine" (one goroutine per connection; also when empty).
	Reader string `json:"reader,omitempty"`
	// SSEPath, when set, makes the connections Server-Sent Events streams
	// on that path, their channels named in the URL.
	SSEPath string `json:"sse_path,omitempty"`
	// SIOPath, when set, makes the connections Socket.IO subscribers on
	// that path (sioconn.go).
	SIOPath string `json:"sio_path,omitempty"`
	// Recovery: connections drop and resubscribe with "since".
	DropEvery time.Duration `json:"drop_every,omitempty"`
	DropDown  time.Duration `json:"drop_down,omitempty"`
}

// userID is the JWT subject of connection i.
func userID(i int) string { return "bench-" + strconv.Itoa(i) }

// streamOf returns the publication stream (channel) connection i tracks.
func (s *fleetSpec) streamOf(i int) int {
	if s.Grouped {
		return i / s.GroupSize
	}
	return 0
}

// channelsOf returns the channels connection i subscribes to; the first one
// carries its stream.
func (s *fleetSpec) channelsOf(i int) []string {
	if s.Grouped {
		return []string{groupChannel(i / s.GroupSize), "user:" + userID(i)}
	}
	return []string{s.Channel}
}

func groupChannel(k int) string { return "group:" + strconv.Itoa(k) }

// progress is a fleet's running totals.
type progress struct {
	Connected  int64   `json:"connected"`
	ConnErrors int64   `json:"conn_errors"`
	Delivered  int64   `json:"delivered"`
	Dropped    int64   `json:"dropped"`
	P99ms      float64 `json:"p99_ms"` // of the latencies recorded in the last second or so
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
}

// fleetResult is what a fleet reports at the end; worker processes send it
// as JSON.
type fleetResult struct {
	Connected       int                    `json:"connected"`
	ConnectErrors   map[string]int         `json:"connect_errors,omitempty"`
	ConnectStartNs  int64                  `json:"connect_start_ns"`
	ConnectEndNs    int64                  `json:"connect_end_ns"`
	ConnectHist     *hdrhistogram.Snapshot `json:"connect_hist,omitempty"`
	Delivered       uint64                 `json:"delivered"`
	Lost            uint64                 `json:"lost"`
	Duplicated      uint64                 `json:"duplicated"`
	Reordered       uint64                 `json:"reordered"`
	Late            uint64                 `json:"late"`
	LatencyHist     *hdrhistogram.Snapshot `json:"latency_hist,omitempty"`
	FirstDeliveryNs int64                  `json:"first_delivery_ns"`
	LastDeliveryNs  int64                  `json:"last_delivery_ns"`
	Dropped         map[string]int         `json:"dropped,omitempty"`
	ErrorFrames     map[string]int         `json:"error_frames,omitempty"`
	Unparsed        uint64                 `json:"unparsed,omitempty"`
	CPUSeconds      float64                `json:"cpu_seconds"`
	// CPUAtFinish is a worker's CPU when the finish command came: the end
	// of the measurement window (CPUSeconds adds the closing).
	CPUAtFinish float64       `json:"cpu_at_finish_seconds,omitempty"`
	Recovery    recoveryStats `json:"recovery"`
	// Bytes of the frames read after subscribing (header + payload as on
	// the wire), inflated sizes of the message frames, frames that came
	// compressed, and connections on which the server accepted
	// permessage-deflate.
	WireBytes        uint64 `json:"wire_bytes"`
	MessageBytes     uint64 `json:"message_bytes"`
	CompressedFrames uint64 `json:"compressed_frames"`
	DeflateConns     int    `json:"deflate_conns"`
}

// recoveryStats counts what the recovery scenario's reconnects saw.
type recoveryStats struct {
	OffsetsSeen   uint64 `json:"offsets_seen"`
	Reconnects    uint64 `json:"reconnects"`
	ReconnectFail uint64 `json:"reconnect_failures"`
	Recovered     uint64 `json:"recovered_true"`
	NotRecovered  uint64 `json:"recovered_false"`
	NoFlag        uint64 `json:"recovered_absent"`
}

// finishMsg tells a fleet how many publications each stream got, so it can
// settle loss.
type finishMsg struct {
	Published []uint64 `json:"published"` // per stream: seqs 0 … Published[s]-1 were scheduled
	Failed    []uint64 `json:"failed"`    // per stream: of those, how many the server refused or were never sent
}

// fleet is a set of benchmark connections: in this process (localFleet) or in
// a worker process (remoteFleet).
type fleet interface {
	// connect opens the fleet's connections and returns when every one has
	// been attempted or ctx is done.
	connect(ctx context.Context) error
	// progress returns running totals.
	progress() progress
	// subscribers returns, per stream, how many connections are subscribed.
	subscribers() []int
	// dropping starts (on) or stops the recovery scenario's dropper, which
	// runs only while publishing.
	dropping(on bool)
	// finish closes the connections and returns the results.
	finish(fin finishMsg) (*fleetResult, error)
}

// bconn is one benchmark connection.
type bconn struct {
	idx    int
	stream int
	ws     *wsConn
	tr     tracker
	first  int64 // unix ns of the first and last delivery
	last   int64

	// Owned by the reader goroutine or receive loop: see fleetResult.
	wire       uint64
	msgBytes   uint64
	compressed uint64

	// The epoll path: the raw socket and its receive buffer (ws is nil
	// then), and the setup while it is in progress (rxdial_linux.go).
	rx    rxState
	setup *rxSetup

	// recovery
	down     bool // reconnecting (guarded by localFleet.mu)
	offset   uint64
	epoch    string
	hasOff   bool
	unparsed uint64
}

type paddedCounter struct {
	n atomic.Int64
	_ [56]byte
}

// localFleet runs its connections in this process: each one read by its own
// goroutine (readLoop), or, with the epoll reader, by one of a few receive
// loops (rx_linux.go).
type localFleet struct {
	spec   fleetSpec
	target target
	local  []net.IP // source addresses, by connection index; nil: any
	tokens []string

	// The epoll reader: its loops, and the connections by fleet index (the
	// loops find a ready connection there; see register).
	epoll     bool
	loops     []*rxLoop
	loopsDone sync.WaitGroup
	rx        []atomic.Pointer[bconn]

	lat   *shardedHist
	conn  *shardedHist
	deliv [histShards]paddedCounter

	connected atomic.Int64
	deflated  atomic.Int64 // connections with permessage-deflate accepted
	connErrs  atomic.Int64
	dropped   atomic.Int64
	stopping  atomic.Bool
	readers   sync.WaitGroup
	connectNs [2]atomic.Int64 // start, end

	mu          sync.Mutex
	conns       []*bconn
	errs        map[string]int
	drops       map[string]int
	errorFrames map[string]int
	subs        []int
	rec         recoveryStats
	stopDrops   context.CancelFunc // the running dropper's; nil when none runs
}

// newLocalFleet validates spec and mints its tokens.
func newLocalFleet(spec fleetSpec) (*localFleet, error) {
	t, err := parseTarget(spec.WSURL, "")
	if err != nil {
		return nil, err
	}
	f := &localFleet{
		spec:        spec,
		target:      t,
		lat:         newShardedHist(),
		conn:        newShardedHist(),
		errs:        map[string]int{},
		drops:       map[string]int{},
		errorFrames: map[string]int{},
		// Recovery reconnects inside the reader: it keeps readLoop.
		epoll: spec.Reader == "epoll" && spec.DropEvery <= 0,
	}
	if f.epoll && !epollSupported {
		return nil, errNoEpoll
	}
	for _, a := range spec.SourceIPs {
		ip := net.ParseIP(a)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: source address %q", errNotLoopback, a)
		}
		f.local = append(f.local, ip)
	}
	if spec.Count > 0 {
		f.subs = make([]int, spec.streamOf(spec.First+spec.Count-1)+1)
	}
	f.tokens = make([]string, spec.Count)
	for i := range f.tokens {
		tok, err := auth.Mint([]byte(spec.Secret), auth.Identity{UserID: userID(spec.First + i)}, spec.TokenTTL)
		if err != nil {
			return nil, err
		}
		f.tokens[i] = tok
	}
	return f, nil
}

func (f *localFleet) connect(ctx context.Context) error {
	if f.epoll && f.loops == nil {
		if err := f.startLoops(); err != nil {
			// No connection can be read: all count as failed, for this reason.
			f.connErrs.Add(int64(f.spec.Count))
			f.mu.Lock()
			f.errs["receive loops: "+shortErr(err)] += f.spec.Count
			f.mu.Unlock()
			return err
		}
	}
	f.connectNs[0].Store(time.Now().UnixNano())
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := min(f.spec.Concurrency, f.spec.Count)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= f.spec.Count {
					return
				}
				f.connectOne(ctx, i)
			}
		}()
	}
	wg.Wait()
	f.connectNs[1].Store(time.Now().UnixNano())
	return ctx.Err()
}

// localFor is the source address of connection idx, or nil for any.
func (f *localFleet) localFor(idx int) net.IP {
	if len(f.local) == 0 {
		return nil
	}
	return f.local[idx%len(f.local)]
}

// targetFor is the target connection with channels chans dials: with
// SubscribeInURL the upgrade request names them (subscribe=a,b).
func (f *localFleet) targetFor(chans []string) target {
	t := f.target
	if f.spec.SubscribeInURL {
		sep := "?"
		if strings.Contains(t.path, "?") {
			sep = "&"
		}
		t.path += sep + "subscribe=" + url.QueryEscape(strings.Join(chans, ","))
	}
	return t
}

// sseTarget is the target an event stream of channels chans requests.
func (f *localFleet) sseTarget(chans []string) target {
	t := f.target
	q := url.Values{"channel": chans}
	t.path = f.spec.SSEPath + "?" + q.Encode()
	return t
}

// connectOne dials connection First+i, waits for connected, subscribes and
// waits for every subscribed ack, then starts its reader: on the epoll path
// all of it happens in a receive loop (connectRaw); else dialWS and setup
// do it here and a goroutine reads.
func (f *localFleet) connectOne(ctx context.Context, i int) {
	if f.epoll {
		f.connectRaw(ctx, i)
		return
	}
	idx := f.spec.First + i
	start := time.Now()
	c, err := f.dial(ctx, i, start)
	if err != nil {
		f.connectFailed(err)
		return
	}
	bc := &bconn{idx: idx, stream: f.spec.streamOf(idx), ws: c}
	if err := f.setup(bc, start.Add(f.spec.ConnectTimeout), nil); err != nil {
		c.close(ws.StatusNormalClosure)
		f.connectFailed(err)
		return
	}
	f.conn.record(idx, time.Since(start).Microseconds())
	if !f.keep(bc, c.deflate, true) {
		c.close(ws.StatusNormalClosure)
		return
	}
	go f.readLoop(bc)
}

// dial opens connection First+i on the goroutine path, as the protocol
// asks, and runs its handshake.
func (f *localFleet) dial(ctx context.Context, i int, start time.Time) (*wsConn, error) {
	idx := f.spec.First + i
	if f.spec.SSEPath != "" {
		return dialSSE(ctx, f.sseTarget(f.spec.channelsOf(idx)), f.tokens[i], f.localFor(idx), f.spec.ReadBuffer, f.spec.ConnectTimeout)
	}
	t, sio := f.targetFor(f.spec.channelsOf(idx)), f.spec.SIOPath != ""
	if sio {
		t = sioTarget(f.target, f.spec.SIOPath)
	}
	c, err := dialWS(ctx, t, f.tokens[i], f.localFor(idx), f.spec.ReadBuffer, f.spec.ConnectTimeout, uint64(idx)*0x9e3779b97f4a7c15+uint64(start.UnixNano()), f.spec.Compress)
	if c != nil {
		c.sio = sio
	}
	return c, err
}

// keep counts bc, subscribed, as one of the fleet's connections (with
// reader, a reader goroutine is about to start for it). Once the fleet is
// stopping it counts nothing and returns false.
func (f *localFleet) keep(bc *bconn, deflate, reader bool) bool {
	f.mu.Lock()
	if f.stopping.Load() {
		f.mu.Unlock()
		return false
	}
	f.conns = append(f.conns, bc)
	f.subs[bc.stream]++
	if reader {
		f.readers.Add(1)
	}
	f.mu.Unlock()
	f.connected.Add(1)
	if deflate {
		f.deflated.Add(1)
	}
	return true
}

// appendSubscribe appends the subscribe command for ch, resuming after
// since's position when since is non-nil and has one.
func appendSubscribe(b []byte, ch string, since *bconn) []byte {
	b = append(b, `{"type":"subscribe","channel":"`...)
	b = append(b, ch...)
	b = append(b, '"')
	if since != nil && since.hasOff {
		b = append(b, `,"since":{"offset":`...)
		b = strconv.AppendUint(b, since.offset, 10)
		b = append(b, `,"epoch":"`...)
		b = append(b, since.epoch...)
		b = append(b, `"}`...)
	}
	return append(b, '}')
}

// setup reads the connected frame, subscribes (with since when given) and
// waits for the acks, all before deadline. It returns the "recovered" flag of
// the first channel's ack when since was given.
func (f *localFleet) setup(bc *bconn, deadline time.Time, since *bconn) error {
	c := bc.ws
	_ = c.nc.SetDeadline(deadline)
	defer func() { _ = c.nc.SetDeadline(time.Time{}) }()
	if c.sio {
		return f.sioSetupConn(bc)
	}
	op, p, err := c.readFrame()
	if err != nil {
		return fmt.Errorf("waiting for connected: %w", err)
	}
	if op != ws.OpText || string(frameType(p)) != "connected" {
		return fmt.Errorf("first frame is not connected: %.100q", p)
	}
	chans := f.spec.channelsOf(bc.idx)
	if !f.spec.SubscribeInURL && !c.sse { // else the upgrade request (or the stream's URL) named the channels
		if err := writeSubscribes(c, chans, since); err != nil {
			return err
		}
	}
	for acked := 0; acked < len(chans); {
		op, p, err := c.readFrame()
		if err != nil {
			return fmt.Errorf("waiting for subscribed: %w", err)
		}
		switch {
		case op == ws.OpPing:
			_ = c.writeFrame(ws.OpPong, p)
			continue
		case op == ws.OpClose:
			return fmt.Errorf("closed by server while subscribing: %d", closeCode(p))
		}
		switch string(frameType(p)) {
		case "subscribed":
			f.subscribed(bc, p, since, chans[0])
			acked++
		case "error":
			return fmt.Errorf("subscribe refused: %s", stringField(p, "code"))
		case "message":
			// A publication racing a resubscribe (recovery): account for it.
			bc.countFrame(p)
			f.onMessage(bc, p)
		}
	}
	return nil
}

// writeSubscribes sends one subscribe command per channel, the first with
// since when given (recovery tracks the first channel only).
func writeSubscribes(c *wsConn, chans []string, since *bconn) error {
	cmds := make([][]byte, 0, 2)
	for k, ch := range chans {
		from := since
		if k > 0 {
			from = nil
		}
		cmds = append(cmds, appendSubscribe(make([]byte, 0, 96), ch, from))
	}
	if err := c.writeTexts(cmds...); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}

// subscribed takes a subscribed reply p during setup: for the tracked
// channel first, the position recovery resumes from and, with since, what
// the reply says was recovered.
func (f *localFleet) subscribed(bc *bconn, p []byte, since *bconn, first string) {
	if string(stringField(p, "channel")) != first {
		return
	}
	if f.spec.DropEvery > 0 {
		// The channel's position at subscribe time: recovery resumes from
		// here until a delivery moves it. After a resubscribe in the same
		// epoch the stored offset stays (this one is the newest, and the
		// replay after it moves the stored one); in another the stored
		// position belongs to a lost history, and deliveries carry no epoch
		// to replace it.
		if off, ok := uintField(p, "offset"); ok {
			if epoch := stringField(p, "epoch"); since == nil || string(epoch) != bc.epoch {
				bc.offset, bc.hasOff = off, true
				bc.epoch = string(epoch)
			}
		}
	}
	if since == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case bytesContains(p, `"recovered":true`):
		f.rec.Recovered++
	case bytesContains(p, `"recovered":false`):
		f.rec.NotRecovered++
	default:
		f.rec.NoFlag++
	}
}

func bytesContains(p []byte, s string) bool { return strings.Contains(string(p), s) }

// connectFailed counts a failed connection attempt under a short reason.
func (f *localFleet) connectFailed(err error) {
	f.connErrs.Add(1)
	reason := classifyErr(err)
	f.mu.Lock()
	f.errs[reason]++
	f.mu.Unlock()
}

// classifyErr turns a connect error into a short, bounded-cardinality label.
func classifyErr(err error) string {
	var de *dialError
	if errors.As(err, &de) && de.status != 0 {
		return "http " + strconv.Itoa(de.status)
	}
	if label := classifyKnownErr(err); label != "" {
		return label
	}
	s := err.Error()
	if strings.HasPrefix(s, "subscribe refused") || strings.HasPrefix(s, "first frame") || strings.HasPrefix(s, "closed by server") {
		if len(s) > 60 {
			s = s[:60]
		}
		return s
	}
	return "other"
}

// classifyKnownErr labels the errors classifyErr knows by identity; "" for
// others.
func classifyKnownErr(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free source port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, errNotLoopback):
		return "not loopback"
	case errors.Is(err, errContextTakeover):
		return "deflate context takeover"
	}
	return ""
}

// readLoop is the receive hot path of one connection: no allocation per
// frame, no JSON decoding.
func (f *localFleet) readLoop(bc *bconn) {
	defer f.readers.Done()
	for {
		op, p, err := bc.ws.readFrame()
		if err != nil {
			if f.stopping.Load() || !f.lost(bc, "read: "+shortErr(err)) {
				return
			}
			continue
		}
		if op != ws.OpClose || !f.stopping.Load() {
			// The server's answer to finish's own close frame is teardown,
			// read or not by the time the socket closes: like the epoll
			// path, which stops reading first, it is left out.
			bc.wire += uint64(bc.ws.lastWire)
		}
		switch op {
		case ws.OpText:
			bc.msgBytes += uint64(len(p))
			if bc.ws.lastCompressed {
				bc.compressed++
			}
			f.onMessage(bc, p)
		case ws.OpPing:
			_ = bc.ws.writeFrame(ws.OpPong, p)
		case ws.OpClose:
			if f.stopping.Load() {
				return
			}
			code := closeCode(p)
			_ = bc.ws.nc.Close()
			if !f.lost(bc, "close "+strconv.Itoa(code)) {
				return
			}
		}
	}
}

// lost handles a connection the reader lost for reason: recovery
// reconnects it (true: read on); otherwise it is dropped, unless the end
// came meanwhile (then it is not a drop).
func (f *localFleet) lost(bc *bconn, reason string) bool {
	if f.spec.DropEvery > 0 && f.reconnect(bc) {
		return true
	}
	if !f.stopping.Load() {
		f.drop(bc, reason)
	}
	return false
}

// countFrame adds a text frame read outside readLoop (during a recovery
// resubscribe) to the connection's byte counts.
func (bc *bconn) countFrame(p []byte) {
	bc.wire += uint64(bc.ws.lastWire)
	bc.msgBytes += uint64(len(p))
	if bc.ws.lastCompressed {
		bc.compressed++
	}
}

// onMessage handles one text frame.
func (f *localFleet) onMessage(bc *bconn, p []byte) {
	if len(p) > 16 && string(p[:17]) == `{"type":"message"` {
		seq, t, ok := scanSeqT(p)
		if !ok {
			bc.unparsed++
			return
		}
		now := time.Now().UnixNano()
		f.lat.record(bc.idx, (now-t)/1000)
		bc.tr.add(seq)
		if bc.first == 0 {
			bc.first = now
		}
		bc.last = now
		f.deliv[uint(bc.idx)%histShards].n.Add(1)
		if f.spec.DropEvery > 0 {
			if off, ok := uintField(p, "offset"); ok {
				bc.offset, bc.hasOff = off, true
			}
		}
		return
	}
	if string(frameType(p)) == "error" {
		code := string(stringField(p, "code"))
		f.mu.Lock()
		f.errorFrames[code]++
		f.mu.Unlock()
	}
}

func shortErr(err error) string {
	switch {
	case errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case err.Error() == "EOF" || errors.Is(err, os.ErrClosed):
		return "EOF"
	}
	s := err.Error()
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

// drop records a connection the server closed (or that failed) before the end.
func (f *localFleet) drop(bc *bconn, why string) {
	_ = bc.ws.nc.Close()
	f.dropped.Add(1)
	f.mu.Lock()
	f.drops[why]++
	f.mu.Unlock()
}

func (f *localFleet) progress() progress {
	var d int64
	for i := range f.deliv {
		d += f.deliv[i].n.Load()
	}
	return progress{
		Connected:  f.connected.Load(),
		ConnErrors: f.connErrs.Load(),
		Delivered:  d,
		Dropped:    f.dropped.Load(),
	}
}

// intervalP99 returns the p99 latency (ms) recorded since its previous call.
func (f *localFleet) intervalP99() float64 {
	return float64(f.lat.takeInterval().ValueAtQuantile(99)) / 1000
}

func (f *localFleet) subscribers() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.subs...)
}

func (f *localFleet) finish(fin finishMsg) (*fleetResult, error) {
	f.mu.Lock()
	f.stopping.Store(true)
	conns := f.conns
	if !f.epoll {
		for _, bc := range conns {
			bc.ws.close(ws.StatusNormalClosure)
		}
	}
	f.mu.Unlock()
	if f.epoll {
		// Stop the loops first: then every connection's state is finish's.
		f.stopLoops()
		out := rxOut{rng: uint64(time.Now().UnixNano()) | 1}
		for _, bc := range conns {
			f.closeDetached(bc, &out)
		}
		f.closeSetups()
	}
	f.readers.Wait()

	r := &fleetResult{
		Connected:      int(f.connected.Load()),
		ConnectStartNs: f.connectNs[0].Load(),
		ConnectEndNs:   f.connectNs[1].Load(),
		ConnectHist:    exportHist(f.conn.merged()),
		LatencyHist:    exportHist(f.lat.merged()),
		DeflateConns:   int(f.deflated.Load()),
	}
	for _, bc := range conns {
		var pub, failed uint64
		if bc.stream < len(fin.Published) {
			pub = fin.Published[bc.stream]
		}
		if bc.stream < len(fin.Failed) {
			failed = fin.Failed[bc.stream]
		}
		missing := bc.tr.finish(pub)
		if missing > failed {
			r.Lost += missing - failed
		}
		r.Delivered += bc.tr.received + bc.tr.dup + bc.tr.late
		r.Duplicated += bc.tr.dup
		r.Reordered += bc.tr.reordered
		r.Late += bc.tr.late
		r.Unparsed += bc.unparsed
		r.WireBytes += bc.wire
		r.MessageBytes += bc.msgBytes
		r.CompressedFrames += bc.compressed
		r.FirstDeliveryNs = earliest(r.FirstDeliveryNs, bc.first)
		r.LastDeliveryNs = max(r.LastDeliveryNs, bc.last)
	}
	f.mu.Lock()
	r.ConnectErrors = nonEmpty(f.errs)
	r.Dropped = nonEmpty(f.drops)
	r.ErrorFrames = nonEmpty(f.errorFrames)
	r.Recovery = f.rec
	f.mu.Unlock()
	return r, nil
}

func nonEmpty(m map[string]int) map[string]int {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sortedKeys returns m's keys in order, for stable output.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Command soak runs herald for a while under a mixed load and fails when
// the server does not come back to its idle footprint afterwards, or when a
// recovering subscriber loses or repeats a message. scripts/soak builds
// herald and runs it; docs/soak.md says what it checks.
//
// For each broker (memory, and redis on a redis-server of its own) it
// starts the binary on loopback with a history namespace, runs a warm-up
// round of the load, lets the clients leave and takes the idle baseline
// (RSS, Go heap, goroutines, open files, read from /metrics); then runs the
// load for the rest of its share of --duration, lets the clients leave
// again, and waits up to --settle for RSS to be within 10% + 20 MB of the
// baseline, goroutines within 10 and open files at or under it. The load:
// API publishers on a few channels; subscribers that drop (abruptly or with
// a close frame) and come back with since, checking that every offset
// arrives once and in order, and at the end that they reached the last
// offset published; connections that come and go; and slow consumers that
// subscribe and never read. It prints a sample every --sample.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/redistest"
)

const (
	secret = "herald-soak-secret-0123456789abcdef"
	apiKey = "herald-soak-key-0123"
)

type options struct {
	bin        string
	duration   time.Duration
	brokers    []string
	channels   int
	rate       float64
	recoverers int
	churners   int
	slow       int
	sample     time.Duration
	settle     time.Duration
}

func main() {
	var o options
	var brokers string
	flag.StringVar(&o.bin, "bin", "", "the herald binary to run (required)")
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "the whole soak, shared equally by the brokers (env SOAK_DURATION)")
	flag.StringVar(&brokers, "brokers", "memory,redis", "brokers to soak, comma-separated: memory, redis")
	flag.IntVar(&o.channels, "channels", 8, "channels published to")
	flag.Float64Var(&o.rate, "rate", 200, "publications per second, all channels together")
	flag.IntVar(&o.recoverers, "recoverers", 40, "subscribers that drop and recover")
	flag.IntVar(&o.churners, "churners", 40, "connections that come and go")
	flag.IntVar(&o.slow, "slow", 10, "slow consumers (subscribe to every channel, never read)")
	flag.DurationVar(&o.sample, "sample", 5*time.Second, "how often to print a sample")
	flag.DurationVar(&o.settle, "settle", 60*time.Second, "how long after the clients leave the footprint has to come back")
	flag.Parse()
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak: SOAK_DURATION:", err)
			os.Exit(2)
		}
		o.duration = d
	}
	o.brokers = strings.Split(brokers, ",")
	if o.bin == "" || o.channels < 1 || o.rate <= 0 || o.duration <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed := false
	for _, b := range o.brokers {
		if err := soak(ctx, o, b, o.duration/time.Duration(len(o.brokers))); err != nil {
			fmt.Printf("soak %s: FAIL: %v\n", b, err)
			failed = true
		} else {
			fmt.Printf("soak %s: ok\n", b)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// sample is one reading of the server's footprint from /metrics.
type sample struct {
	rss, heap, goroutines, fds, conns, slowCloses float64
}

func (s sample) String() string {
	return fmt.Sprintf("rss=%.1fMB heap=%.1fMB goroutines=%.0f fds=%.0f conns=%.0f slow_closes=%.0f",
		s.rss/1e6, s.heap/1e6, s.goroutines, s.fds, s.conns, s.slowCloses)
}

// node is a running herald.
type node struct {
	addr string
	cmd  *exec.Cmd
	log  string
	hc   *http.Client
}

func soak(ctx context.Context, o options, broker string, share time.Duration) error {
	dir, err := os.MkdirTemp("", "herald-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	args := []string{"serve", "--config", filepath.Join(dir, "herald.yaml"), "--broker", broker}
	if broker == "redis" {
		rs, err := redistest.Start()
		if err != nil {
			return err
		}
		defer rs.Stop()
		// A pool the warm-up fills: its size, not the load's peaks, sets the
		// open files it holds when idle.
		args = append(args, "--redis-url", rs.URL()+"?pool_size=4")
	}
	conf := "jwt_secret: " + secret + "\napi_keys: [" + apiKey + "]\nmax_message_bytes: 16KiB\nclient_queue_bytes: 128KiB\n" +
		"namespaces:\n  - prefix: soak\n    history_size: 100000\n    history_ttl: 20s\n" // history a steady size, far longer than a subscriber is away
	if err := os.WriteFile(filepath.Join(dir, "herald.yaml"), []byte(conf), 0o600); err != nil {
		return err
	}
	n, err := startNode(ctx, o.bin, dir, args)
	if err != nil {
		return err
	}
	defer n.stop()
	cold, err := n.sample()
	if err != nil {
		return err
	}
	fmt.Printf("soak %s: started, %s (log %s)\n", broker, cold, n.log)
	l := &load{o: o, n: n, name: broker, last: make([]atomic.Int64, o.channels)}
	warm := max(share/10, 5*time.Second)
	fmt.Printf("soak %s: warm-up %s\n", broker, warm)
	if err := l.run(ctx, warm); err != nil {
		return err
	}
	base, err := n.idle(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("soak %s: baseline %s\n", broker, base)
	fmt.Printf("soak %s: load %s\n", broker, share-warm)
	if err := l.run(ctx, share-warm); err != nil {
		return err
	}
	if _, err := n.idle(ctx); err != nil {
		return err
	}
	var cur sample
	var why string
	for deadline := time.Now().Add(o.settle); ; {
		if cur, err = n.sample(); err != nil {
			return err
		}
		why = footprint(base, cur)
		if why == "" || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	fmt.Printf("soak %s: after %s\n", broker, cur)
	fmt.Printf("soak %s: %d publications, %d deliveries checked, %d recoveries (%d reconnects), %d churned connections\n",
		broker, l.published.Load(), l.checked.Load(), l.recoveries.Load(), l.reconnects.Load(), l.churned.Load())
	if why != "" {
		return fmt.Errorf("%s %s after the clients left (baseline %s)", why, o.settle, base)
	}
	if err := n.exited(); err != nil {
		return err
	}
	os.Remove(n.log) // kept when the soak fails
	return nil
}

// footprint says how cur is over the baseline ("" when it is not).
func footprint(base, cur sample) string {
	switch {
	case cur.rss > base.rss*1.1+20e6:
		return fmt.Sprintf("RSS %.1fMB is over the baseline's %.1fMB + 10%% + 20MB", cur.rss/1e6, base.rss/1e6)
	case cur.goroutines > base.goroutines+10 || cur.goroutines < base.goroutines-10:
		return fmt.Sprintf("%.0f goroutines, not within 10 of the baseline's %.0f", cur.goroutines, base.goroutines)
	case cur.fds > base.fds:
		return fmt.Sprintf("%.0f open files, over the baseline's %.0f", cur.fds, base.fds)
	}
	return ""
}

func startNode(ctx context.Context, bin, dir string, args []string) (*node, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	n := &node{addr: addr, log: filepath.Join(os.TempDir(), "herald-soak-"+strconv.Itoa(os.Getpid())+"-"+filepath.Base(dir)+".log"),
		hc: &http.Client{Timeout: 10 * time.Second}}
	logf, err := os.Create(n.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	n.cmd = exec.Command(bin, append(args, "--addr", addr)...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if r, err := n.hc.Get("http://" + addr + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return n, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			n.stop()
			return nil, fmt.Errorf("herald did not answer /healthz within 15s (log %s)", n.log)
		}
	}
}

func (n *node) stop() {
	if n.cmd.ProcessState == nil {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = n.cmd.Process.Kill()
			<-done
		}
	}
}

// exited reports an error if herald exited by itself.
func (n *node) exited() error {
	if err := n.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		return fmt.Errorf("herald exited during the soak (log %s)", n.log)
	}
	return nil
}

// sample reads the footprint from /metrics, on a connection of its own
// that it closes, so that it does not count itself twice.
func (n *node) sample() (sample, error) {
	defer n.hc.CloseIdleConnections()
	r, err := n.hc.Get("http://" + n.addr + "/metrics")
	if err != nil {
		return sample{}, err
	}
	defer r.Body.Close()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return sample{}, err
	}
	var s sample
	fields := map[string]*float64{
		"process_resident_memory_bytes": &s.rss, "go_memstats_heap_inuse_bytes": &s.heap, "go_goroutines": &s.goroutines,
		"process_open_fds": &s.fds, "herald_connections": &s.conns, "herald_slow_consumer_closes_total": &s.slowCloses,
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if p := fields[name]; ok && p != nil {
			*p, _ = strconv.ParseFloat(strings.TrimSpace(val), 64)
		}
	}
	return s, nil
}

// idle waits until no WebSocket connection is open and a few seconds have
// passed (closing connections finish their goroutines), then samples.
func (n *node) idle(ctx context.Context) (sample, error) {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		s, err := n.sample()
		if err != nil {
			return s, err
		}
		if s.conns == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return s, fmt.Errorf("%.0f connections still open 30s after the clients left", s.conns)
		}
	}
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
		return sample{}, ctx.Err()
	}
	return n.sample()
}

// load is the clients of one soak: they keep, across rounds, where each
// recovering subscriber stands.
type load struct {
	o    options
	n    *node
	name string
	// last is the newest offset the API answered per channel; epoch the
	// channels' epoch (one per broker run: nothing loses history here).
	last       []atomic.Int64
	published  atomic.Int64
	checked    atomic.Int64
	recoveries atomic.Int64
	reconnects atomic.Int64
	churned    atomic.Int64
	subs       []*subscriber
}

// run runs the load for d, then stops the publishers, brings every
// recovering subscriber up to the last offset published, and closes every
// client.
func (l *load) run(ctx context.Context, d time.Duration) error {
	if l.subs == nil {
		for i := range l.o.recoverers {
			l.subs = append(l.subs, &subscriber{l: l, id: i, channel: i % l.o.channels})
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pubCtx, stopPub := context.WithTimeout(ctx, d)
	defer stopPub()
	errs := make(chan error, 1)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
		cancel()
	}
	var pubs, clients sync.WaitGroup
	const publishers = 4
	for i := range publishers {
		pubs.Go(func() { l.publish(pubCtx, i, publishers, fail) })
	}
	for _, s := range l.subs {
		clients.Go(func() { s.run(pubCtx, fail) })
	}
	for i := range l.o.churners {
		clients.Go(func() { l.churn(pubCtx, i) })
	}
	for i := range l.o.slow {
		clients.Go(func() { l.slowConsumer(pubCtx, i) })
	}
	tick := time.NewTicker(l.o.sample)
	defer tick.Stop()
	start := time.Now()
	for pubCtx.Err() == nil {
		select {
		case <-tick.C:
			if s, err := l.n.sample(); err == nil {
				fmt.Printf("soak %s: %4.0fs %s published=%d checked=%d recoveries=%d\n", l.name, time.Since(start).Seconds(), s, l.published.Load(), l.checked.Load(), l.recoveries.Load())
			}
		case <-pubCtx.Done():
		}
	}
	pubs.Wait()
	clients.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// Every recovering subscriber comes back once more and must reach the
	// last offset of its channel.
	var final sync.WaitGroup
	for _, s := range l.subs {
		final.Go(func() {
			if err := s.catchUp(ctx); err != nil {
				fail(err)
			}
		})
	}
	final.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return nil
}

func (l *load) channel(i int) string { return "soak:" + strconv.Itoa(i) }

func (l *load) token(user string) string {
	tok, err := auth.Mint([]byte(secret), auth.Identity{UserID: user, Channels: []string{"soak:*"}}, 24*time.Hour)
	if err != nil {
		panic(err) // a fixed, valid secret and user
	}
	return tok
}

// publish publishes through the API at its share of the rate, round-robin
// over the channels, payloads of about 500 bytes and every tenth 8 KB.
func (l *load) publish(ctx context.Context, i, of int, fail func(error)) {
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	every := time.Duration(float64(time.Second) * float64(of) / l.o.rate)
	pad, big := strings.Repeat("x", 480), strings.Repeat("y", 8000)
	t := time.NewTicker(every)
	defer t.Stop()
	for k := i; ; k += of {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ch := k % l.o.channels
		p := pad
		if k%10 == 0 {
			p = big
		}
		body := fmt.Sprintf(`{"channel":%q,"data":{"k":%d,"pad":%q}}`, l.channel(ch), k, p)
		req, _ := http.NewRequest("POST", "http://"+l.n.addr+"/api/publish", strings.NewReader(body))
		req.Header.Set("X-API-Key", apiKey)
		req.Header.Set("Content-Type", "application/json")
		r, err := hc.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				fail(fmt.Errorf("publish: %w", err))
			}
			return
		}
		var res struct {
			Offset int64 `json:"offset"`
		}
		err = json.NewDecoder(r.Body).Decode(&res)
		r.Body.Close()
		if r.StatusCode != 200 || err != nil {
			fail(fmt.Errorf("publish answered %d (%v)", r.StatusCode, err))
			return
		}
		l.published.Add(1)
		for { // the newest offset per channel, as the publishers race
			old := l.last[ch].Load()
			if res.Offset <= old || l.last[ch].CompareAndSwap(old, res.Offset) {
				break
			}
		}
	}
}

// dial opens a WebSocket to the node as user; rcvbuf > 0 sets the socket's
// receive buffer (a slow consumer's small window).
func (l *load) dial(ctx context.Context, user string, rcvbuf int) (net.Conn, error) {
	d := ws.Dialer{Timeout: 10 * time.Second}
	if rcvbuf > 0 {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			// Before the handshake, so that the window it offers is small.
			return rc.Control(func(fd uintptr) {
				setRcvbuf(fd, rcvbuf)
			})
		}}
		d.NetDial = nd.DialContext
	}
	c, br, _, err := d.Dial(ctx, "ws://"+l.n.addr+"/ws?token="+l.token(user))
	if err != nil {
		return nil, err
	}
	if br != nil {
		ws.PutReader(br) // herald sends nothing before the client's first command
	}
	return c, nil
}

// leave closes c abruptly (no close frame) or politely, by chance.
func leave(c net.Conn) {
	if rand.IntN(2) == 0 {
		_ = wsutil.WriteClientMessage(c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	}
	_ = c.Close()
}

// churn connects, subscribes to a channel, reads for a moment and leaves,
// over and over.
func (l *load) churn(ctx context.Context, i int) {
	for ctx.Err() == nil {
		c, err := l.dial(ctx, "churn-"+strconv.Itoa(i), 0)
		if err != nil {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		l.churned.Add(1)
		_ = wsutil.WriteClientText(c, []byte(`{"type":"subscribe","channel":"`+l.channel(rand.IntN(l.o.channels))+`"}`))
		until := time.Now().Add(time.Duration(50+rand.IntN(450)) * time.Millisecond)
		_ = c.SetReadDeadline(until)
		for {
			if _, _, err := wsutil.ReadServerData(c); err != nil {
				break
			}
		}
		leave(c)
	}
}

// slowConsumer subscribes to every channel and never reads, for a while,
// then leaves and comes again.
func (l *load) slowConsumer(ctx context.Context, i int) {
	for ctx.Err() == nil {
		c, err := l.dial(ctx, "slow-"+strconv.Itoa(i), 4096)
		if err != nil {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		for ch := range l.o.channels {
			_ = wsutil.WriteClientText(c, []byte(`{"type":"subscribe","channel":"`+l.channel(ch)+`"}`))
		}
		sleep(ctx, time.Duration(5+rand.IntN(15))*time.Second)
		leave(c)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// subscriber is one recovering subscriber: it holds its channel's position
// across connections and checks every offset it gets is the next one.
type subscriber struct {
	l       *load
	id      int
	channel int
	epoch   string
	offset  int64 // the newest offset received
	started bool
	joined  string // the subscribe command and reply of the current connection, for a failure's message
	nread   int    // messages read on the current connection
}

// run connects, recovers, reads for a while and drops, until ctx is done.
func (s *subscriber) run(ctx context.Context, fail func(error)) {
	for ctx.Err() == nil {
		c, err := s.connect(ctx)
		if err != nil {
			if ctx.Err() == nil && !isNet(err) {
				fail(err)
				return
			}
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		until := time.Now().Add(time.Duration(500+rand.IntN(3000)) * time.Millisecond)
		if err := s.read(c, until, -1); err != nil {
			leave(c)
			fail(err)
			return
		}
		leave(c)
		sleep(ctx, time.Duration(50+rand.IntN(500))*time.Millisecond)
	}
}

// catchUp connects once more and reads until the channel's last published
// offset has arrived.
func (s *subscriber) catchUp(ctx context.Context) error {
	want := s.l.last[s.channel].Load()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; sleep(ctx, 100*time.Millisecond) {
		var c net.Conn
		if c, err = s.connect(ctx); err != nil {
			if !isNet(err) {
				return err
			}
			continue
		}
		err = s.read(c, deadline, want)
		leave(c)
		if err == nil && s.offset >= want {
			return nil
		}
		if err != nil && !isNet(err) {
			return err
		}
	}
	return fmt.Errorf("subscriber %d on %s stopped at offset %d of %d: %d lost (%v)", s.id, s.l.channel(s.channel), s.offset, want, want-s.offset, err)
}

// isNet reports whether err is the connection failing (the subscriber
// tries again), not a wrong answer.
func isNet(err error) bool {
	var ne net.Error
	var ce wsutil.ClosedError
	return errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

type frame struct {
	Type      string          `json:"type"`
	Channel   string          `json:"channel"`
	Offset    int64           `json:"offset"`
	Epoch     string          `json:"epoch"`
	Recovered *bool           `json:"recovered"`
	Code      string          `json:"code"`
	Data      json.RawMessage `json:"data"`
}

// connect dials and subscribes: with since after the first time, which
// must recover everything.
func (s *subscriber) connect(ctx context.Context) (net.Conn, error) {
	c, err := s.l.dial(ctx, "sub-"+strconv.Itoa(s.id), 0)
	if err != nil {
		return nil, err
	}
	ch := s.l.channel(s.channel)
	cmd := `{"type":"subscribe","channel":"` + ch + `"}`
	if s.started {
		cmd = fmt.Sprintf(`{"type":"subscribe","channel":%q,"since":{"offset":%d,"epoch":%q}}`, ch, s.offset, s.epoch)
		s.l.reconnects.Add(1)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wsutil.WriteClientText(c, []byte(cmd)); err != nil {
		c.Close()
		return nil, err
	}
	for {
		b, err := wsutil.ReadServerText(c)
		if err != nil {
			c.Close()
			return nil, err
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			c.Close()
			return nil, fmt.Errorf("subscriber %d: bad frame %q", s.id, b)
		}
		switch f.Type {
		case "subscribed":
		case "error":
			c.Close()
			return nil, fmt.Errorf("subscriber %d: subscribe refused: %s", s.id, b)
		default:
			continue // a frame before the reply (none expected)
		}
		s.joined, s.nread = cmd+" -> "+string(b), 0
		if !s.started {
			s.started, s.epoch, s.offset = true, f.Epoch, f.Offset
			return c, nil
		}
		if f.Recovered == nil || !*f.Recovered || f.Epoch != s.epoch {
			c.Close()
			return nil, fmt.Errorf("subscriber %d on %s: recovery from offset %d of %s answered %s: publications lost", s.id, ch, s.offset, s.epoch, b)
		}
		s.l.recoveries.Add(1)
		return c, nil
	}
}

// read checks the messages on c until the deadline (or, with want >= 0,
// until offset want arrived): each must be its channel's next offset.
func (s *subscriber) read(c net.Conn, until time.Time, want int64) error {
	_ = c.SetDeadline(until)
	for want < 0 || s.offset < want {
		b, err := wsutil.ReadServerText(c)
		if err != nil {
			if want < 0 && isNet(err) {
				return nil // its time is up, or the server closed it: it recovers
			}
			return err
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("subscriber %d: bad frame %q", s.id, b)
		}
		if f.Type != "message" {
			continue
		}
		if f.Offset != s.offset+1 {
			return fmt.Errorf("subscriber %d on %s: offset %d after %d (%s), message %d after %s", s.id, f.Channel, f.Offset, s.offset,
				map[bool]string{true: "a repeat", false: "a gap: publications lost"}[f.Offset <= s.offset], s.nread+1, s.joined)
		}
		s.offset = f.Offset
		s.nread++
		s.l.checked.Add(1)
	}
	return nil
}

// Package redisbroker is herald's broker for several nodes: offsets, epochs,
// history and idempotency keys live in Redis, and each channel's
// publications reach the nodes that have subscribers on it through that
// channel's own Redis pub/sub channel, in the order Redis accepted them. A
// node listens to a channel from its first join there until the channel has
// been idle (no local subscriber, publish or join) for the sweep's idle time,
// so a node does no work for channels no one on it follows.
//
// Each publish and each join is one Lua script, so Redis orders them all on
// one timeline. A join's script reads the channel's position and publishes a
// marker in the same atomic step; the node joins its subscriber when the
// marker comes through the channel's pub/sub stream, which is exactly after
// the last publication the position counts. (The node subscribes to that
// stream, and waits for Redis to confirm it, before the script runs; the
// marker coming through proves the subscription was in place.) Publications
// that arrive between the marker and the script's reply are buffered and
// handed to the join. So, as with the in-memory broker, nothing is lost or
// repeated between a replay and the live stream.
//
// Each node watches the offsets it receives per channel that has local
// state. A gap (an offset skipped, an epoch changed) or a lost pub/sub
// connection means local subscribers missed publications: Options.OnGap is
// told, and herald closes those subscribers so that they recover from
// history when they reconnect.
package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
)

var (
	_ broker.Broker    = (*Broker)(nil)
	_ broker.Liveness  = (*Broker)(nil)
	_ broker.Notifier  = (*Broker)(nil)
	_ broker.Describer = (*Broker)(nil)
)

const numShards = 64

// Options configure a Broker.
type Options struct {
	// Redis says how to reach Redis (see redis.ParseURL). Required. The
	// broker makes its own pool from a copy, with retries off (a publish
	// script retried after a late answer would publish twice) and context
	// deadlines honoured (Timeout bounds every call).
	Redis *redis.Options
	// Prefix starts every key and pub/sub channel, so that several herald
	// clusters can share one Redis. Default "herald".
	Prefix string
	// Deliver receives every publication of every channel this node listens
	// to (see the package comment), in offset order per channel. Required.
	Deliver broker.DeliverFunc
	// OnGap is told that local subscribers of a channel missed publications
	// (an offset skipped, an epoch changed, or the pub/sub connection lost),
	// before anything after the gap is delivered to them. It may run under
	// the channel's local lock, as Deliver does: it must not call the broker.
	OnGap func(channel string)
	// OnLive is told when the pub/sub subscription goes live (true) and when
	// it is lost (false).
	OnLive func(live bool)
	// OnNotify receives what other nodes sent with Notify.
	OnNotify func(kind byte, payload string)
	// Log receives connection losses and recoveries. Default slog.Default().
	Log *slog.Logger
	// StreamTTL is how long an idle channel keeps its epoch and offset in
	// Redis after its last publish or subscribe (at least its history TTL).
	// Default 24h.
	StreamTTL time.Duration
	// Timeout bounds one Redis call, and a publisher's wait for its own
	// publication to come back through pub/sub. Default 5s.
	Timeout time.Duration
	// Workers deliver publications in parallel, one channel always on the
	// same worker. Default GOMAXPROCS.
	Workers int

	pingEvery time.Duration // default pingEvery; shorter in tests
}

// Broker is the Redis broker. Make one with New and run it with Run; until
// its subscription is live, Publish and Subscribe return
// broker.ErrUnavailable.
type Broker struct {
	o      Options
	rdb    *redis.Client
	pubsub string // the pub/sub channel of notifications, which every node listens on
	// psc makes the pub/sub connections. Its dialer lets each PubSub dial
	// once (dialGate): go-redis would otherwise replace a broken connection
	// inside whichever call found it broken, a join's SUBSCRIBE included,
	// and the receive loop would read on without seeing a loss. So every
	// loss is seen, and answered with a new PubSub (receive).
	psc      *redis.Client
	dialGate atomic.Bool
	// subMu guards ps and orders the subscribe and unsubscribe commands of
	// channels between joins, Sweep and a new PubSub (see listen, Sweep and
	// receive).
	subMu  sync.Mutex
	ps     *redis.PubSub // the current connection for every pub/sub channel
	node   string        // this node's id, in join markers
	seed   maphash.Seed
	shards [numShards]shard
	seq    atomic.Uint64 // join ids
	live   atomic.Bool
	gen    atomic.Uint64 // subscription generation: +1 on each loss
	// salt is appended to every epoch this node reports: "-" and the id of
	// the Redis instance's history, which the instance key holds (see
	// verify). A Redis whose history may have been rolled back (restarted
	// from older files or without them, failed over to a replica) gets a new
	// id, so every epoch changes and no recovery can claim offsets handed
	// out again; one whose history provably survived a restart keeps it, so
	// its subscribers recover.
	salt atomic.Pointer[string]
	// run is the run id of the Redis process this node verified (see
	// verify); fence refuses a pool connection to any other, so nothing is
	// written to a restarted Redis before this node has verified it.
	run atomic.Pointer[string]
	// vc makes the connections verify uses, which the fence does not check.
	vc *redis.Client
	// seen keeps, across a lost subscription, the newest position this
	// node delivered or published per channel (stored epoch, without the
	// salt), for verify to check against what Redis holds; verify clears it.
	seenMu sync.Mutex
	seen   map[string]broker.Position
	queues []chan item
	now    func() time.Time
}

type shard struct {
	mu     sync.Mutex
	locals map[string]*local
}

// local is this node's view of one channel. Lock order:
// docs/architecture.md#lock-order.
type local struct {
	mu    sync.Mutex
	name  string
	epoch string // of the newest publication delivered; "" unknown
	last  uint64 // its offset
	// counts remembers the newest deliveries' counts for publishers on this
	// node (made by the first of them: a channel only subscribed here, such
	// as a user's own, costs no more than the fields above).
	counts *[32]delivered
	// sub is where this node's subscription to the channel's pub/sub stream
	// stands; subDone is closed when Redis confirms it (subAsked to
	// subLive).
	sub     subState
	subDone chan struct{}
	waiters []*waiter
	joins   map[string]*pendingJoin // made by the first join
	pins    int                     // publishes and joins in progress
	touched time.Time
}

type subState uint8

const (
	subNone  subState = iota // not subscribed
	subAsked                 // SUBSCRIBE sent (or to be sent again by go-redis on reconnecting), not confirmed
	subLive                  // confirmed on the current pub/sub connection
)

// delivered records how many local connections a publication reached, for
// its publisher's result.
type delivered struct {
	epoch  string
	offset uint64
	n      int
}

type waiter struct {
	epoch  string
	offset uint64
	done   chan int // buffered 1
}

type pendingJoin struct {
	marked   chan struct{} // closed when the marker came through, or the join failed
	isMarked bool
	buf      []broker.Publication // publications after the marker
	// failed: the buffer outgrew maxJoinBuffer, or the subscription was lost.
	failed bool
}

// maxJoinBuffer bounds the publications buffered for one join between its
// marker and its script's reply (a round trip): past it the join fails with
// ErrUnavailable rather than grow without bound.
const maxJoinBuffer = 1 << 16

// New makes a broker. Call Run to start it.
func New(o Options) *Broker {
	if o.Prefix == "" {
		o.Prefix = "herald"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.StreamTTL <= 0 {
		o.StreamTTL = 24 * time.Hour
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.pingEvery <= 0 {
		o.pingEvery = pingEvery
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	ro := *o.Redis
	ro.MaxRetries = -1
	ro.ContextTimeoutEnabled = true
	b := &Broker{o: o, pubsub: o.Prefix + ":pub", node: hex.EncodeToString(id[:]), seed: maphash.MakeSeed(), now: time.Now, seen: make(map[string]broker.Position)}
	vo := ro
	vo.PoolSize = 1
	b.vc = redis.NewClient(&vo)
	fo := ro
	fo.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if err := b.fence(ctx, cn); err != nil {
			return err
		}
		if ro.OnConnect != nil {
			return ro.OnConnect(ctx, cn)
		}
		return nil
	}
	b.rdb = redis.NewClient(&fo)
	pso := ro
	// RESP2: Redis applies its pub/sub output-buffer limit only to RESP2
	// subscribers (a RESP3 one counts as a normal client, unlimited by
	// default), so a node that stops reading is cut off, and sees the loss,
	// rather than making Redis hold without bound what it owes the node.
	pso.Protocol = 2
	if pso.DialTimeout <= 0 {
		pso.DialTimeout = 5 * time.Second
	}
	dial := ro.Dialer
	if dial == nil {
		dial = redis.NewDialer(&pso)
	}
	pso.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !b.dialGate.CompareAndSwap(true, false) {
			return nil, errRedial
		}
		return dial(ctx, network, addr)
	}
	b.psc = redis.NewClient(&pso)
	b.ps = b.psc.Subscribe(context.Background()) // replaced by receive before any use
	for i := range b.shards {
		b.shards[i].locals = make(map[string]*local)
	}
	b.queues = make([]chan item, o.Workers)
	for i := range b.queues {
		b.queues[i] = make(chan item, 1024)
	}
	none := ""
	b.salt.Store(&none)
	b.run.Store(&none)
	return b
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Live reports whether the pub/sub subscription is live.
func (b *Broker) Live() bool { return b.live.Load() }

// Describe names the Redis (its address and database, never a password) and
// the prefix.
func (b *Broker) Describe() []any {
	return []any{"redis", b.o.Redis.Network + "://" + b.o.Redis.Addr, "db", b.o.Redis.DB, "prefix", b.o.Prefix}
}

func (b *Broker) key(kind, channel string) string { return b.o.Prefix + ":" + kind + ":" + channel }

// stream is the pub/sub channel of a channel's publications and join
// markers.
func (b *Broker) stream(channel string) string { return b.key("c", channel) }

// acquire returns the channel's local state, made if needed, pinned so
// that Sweep keeps it; release unpins it.
func (b *Broker) acquire(channel string) *local {
	sh := &b.shards[maphash.String(b.seed, channel)%numShards]
	sh.mu.Lock()
	l := sh.locals[channel]
	if l == nil {
		l = &local{name: channel}
		sh.locals[channel] = l
	}
	l.pins++ // under the shard lock: Sweep checks pins under it too
	sh.mu.Unlock()
	return l
}

func (b *Broker) release(l *local) {
	sh := &b.shards[maphash.String(b.seed, l.name)%numShards]
	sh.mu.Lock()
	l.pins--
	sh.mu.Unlock()
	l.mu.Lock()
	l.touched = b.now()
	l.mu.Unlock()
}

func (b *Broker) lookup(channel string) *local {
	sh := &b.shards[maphash.String(b.seed, channel)%numShards]
	sh.mu.Lock()
	l := sh.locals[channel]
	sh.mu.Unlock()
	return l
}

// ctx bounds one call to Redis by Options.Timeout and by parent, the
// caller's context.
func (b *Broker) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, b.o.Timeout)
}

// errRedial is what a PubSub gets when it tries to dial a second time.
var errRedial = errors.New("pub/sub connection lost")

// unavailable wraps a Redis error as broker.ErrUnavailable.
func unavailable(err error) error { return fmt.Errorf("%w: %v", broker.ErrUnavailable, err) }

// Publish runs the publish script, then waits (at most Options.Timeout) for
// the publication to come back through pub/sub and be delivered on this
// node, so that PublishResult.Delivered counts this node's deliveries.
func (b *Broker) Publish(ctx context.Context, channel string, p broker.Publication, o broker.PublishOptions) (broker.PublishResult, error) {
	if !b.live.Load() {
		return broker.PublishResult{}, broker.ErrUnavailable
	}
	l := b.acquire(channel)
	defer b.release(l)
	// The generation before the listening state: a loss in between leaves
	// a state it has reset, or a generation awaitDelivery sees is gone.
	gen, salt := b.gen.Load(), b.salt.Load()
	l.mu.Lock()
	// Listening before the script runs: the publication comes back. (Not
	// listening: nobody here is subscribed, as a local subscriber's join
	// makes the node listen, unless a join completes meanwhile; see below.)
	listening := l.sub == subLive
	if l.counts == nil {
		l.counts = new([32]delivered)
	}
	l.mu.Unlock()
	meta := b.key("m", channel)
	idem, window := meta, int64(0)
	if o.IdempotencyKey != "" && o.IdempotencyWindow > 0 {
		idem, window = b.key("i", field(channel)+o.IdempotencyKey), max(o.IdempotencyWindow.Milliseconds(), 1)
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	r, err := publishScript.Run(ctx, b.rdb, []string{meta, b.key("h", channel), idem, b.instance()},
		newEpoch(), max(b.streamTTL(o.History), window), o.History.Size, o.History.TTL.Milliseconds(), window,
		b.stream(channel), channel, p.Origin, encodeBody(&p), instanceID(salt)).Slice()
	if err != nil {
		b.changed(err, gen)
		return broker.PublishResult{}, failed(err)
	}
	off, err := offsetOf(r, 4, 1)
	if err != nil {
		return broker.PublishResult{}, unavailable(err)
	}
	pos := broker.Position{Offset: off, Epoch: str(r[2]) + *salt}
	if n, _ := r[0].(int64); n == 1 {
		return broker.PublishResult{Position: pos, Duplicate: true}, nil
	}
	if !listening {
		// A join here that completed before the script ran holds the
		// stream's position in this epoch from then on (its baseline, or a
		// delivery after it), and its subscription gets the publication.
		l.mu.Lock()
		listening = l.sub == subLive && l.epoch == pos.Epoch
		l.mu.Unlock()
		if !listening {
			return broker.PublishResult{Position: pos}, nil
		}
	}
	return broker.PublishResult{Position: pos, Delivered: b.awaitDelivery(ctx, l, pos, gen)}, nil
}

// offsetOf reads the offset at r[i] of a script's answer of n values.
func offsetOf(r []any, n, i int) (uint64, error) {
	if len(r) != n {
		return 0, fmt.Errorf("script answered %d values, want %d", len(r), n)
	}
	off, err := strconv.ParseUint(str(r[i]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("script answered offset %q", str(r[i]))
	}
	return off, nil
}

// failed wraps the error of a call that changes state: certain to have
// done nothing when Redis could not be reached or refused it, else (a
// timeout, a connection lost mid-call) of unknown outcome.
func failed(err error) error {
	var op *net.OpError
	var re redis.Error
	if (errors.As(err, &op) && op.Op == "dial") || errors.As(err, &re) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, errRestarted) {
		return unavailable(err)
	}
	return fmt.Errorf("%w: %w: %v", broker.ErrUnavailable, broker.ErrOutcomeUnknown, err)
}

// streamTTL is how long a channel's keys live after a publish or join.
func (b *Broker) streamTTL(h broker.HistoryOptions) int64 {
	return max(b.o.StreamTTL, h.TTL).Milliseconds()
}

// awaitDelivery waits for this node's delivery of the publication at pos and
// returns how many connections it reached (0 when it did not come back in
// time, or the subscription of generation gen was lost meanwhile: a loss
// answers the waiters it finds, and a waiter added after it sees the new
// generation under the same lock).
func (b *Broker) awaitDelivery(ctx context.Context, l *local, pos broker.Position, gen uint64) int {
	l.mu.Lock()
	if l.epoch == pos.Epoch && l.last >= pos.Offset {
		n := l.count(pos)
		l.mu.Unlock()
		return n
	}
	if b.gen.Load() != gen {
		// The subscription was lost since the publish began: its echo may
		// have come before (and been forgotten) or never come.
		l.mu.Unlock()
		return 0
	}
	w := &waiter{epoch: pos.Epoch, offset: pos.Offset, done: make(chan int, 1)}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()
	select {
	case n := <-w.done:
		return n
	case <-ctx.Done():
		l.mu.Lock()
		l.dropWaiter(w)
		l.mu.Unlock()
		return 0
	}
}

func (l *local) count(pos broker.Position) int {
	if l.counts == nil {
		return 0
	}
	d := &l.counts[pos.Offset%uint64(len(l.counts))]
	if d.epoch == pos.Epoch && d.offset == pos.Offset {
		return d.n
	}
	return 0
}

func (l *local) dropWaiter(w *waiter) {
	for i, x := range l.waiters {
		if x == w {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return
		}
	}
}

// settle answers the waiters the newest delivery (l.epoch, l.last) decides:
// theirs, or one they can no longer get. l.mu must be held.
func (l *local) settle() {
	keep := l.waiters[:0]
	for _, w := range l.waiters {
		switch {
		case w.epoch == l.epoch && w.offset > l.last:
			keep = append(keep, w)
		default:
			w.done <- l.count(broker.Position{Offset: w.offset, Epoch: w.epoch})
		}
	}
	clear(l.waiters[len(keep):])
	l.waiters = keep
}

// Subscribe reads the channel's position (and history, for recovery) and
// joins at the marker the same script published; see the package comment.
// join runs under the channel's local lock: it must add the subscriber to
// the live fan-out and queue the replay before it returns.
func (b *Broker) Subscribe(ctx context.Context, channel string, o broker.SubscribeOptions, join func(broker.Recovery) error) error {
	if !b.live.Load() {
		return broker.ErrUnavailable
	}
	gen := b.gen.Load()
	l := b.acquire(channel)
	defer b.release(l)
	id := b.node + ":" + strconv.FormatUint(b.seq.Add(1), 36)
	pj := &pendingJoin{marked: make(chan struct{})}
	l.mu.Lock()
	if l.joins == nil {
		l.joins = make(map[string]*pendingJoin)
	}
	l.joins[id] = pj
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.joins, id)
		l.mu.Unlock()
	}()
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	if err := b.listen(ctx, l); err != nil {
		return err
	}
	st, err := b.read(ctx, channel, o.History, o.Since != nil, "j"+field(channel)+field(id), gen)
	if err != nil {
		return err
	}
	select {
	case <-pj.marked:
	case <-ctx.Done():
		return unavailable(errors.New("join marker did not come back through pub/sub"))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if pj.failed || b.gen.Load() != gen {
		return unavailable(errors.New("pub/sub interrupted during the join"))
	}
	rec := broker.Recovery{Position: st.Position}
	if o.Since != nil {
		rec = broker.Recover(st, *o.Since)
	}
	if n := len(pj.buf); n > 0 {
		// Handed over after the position: a recovery's position is its
		// replay's end, as the memory broker's; a plain join's stays where
		// the script read it, before them, as the subscriber takes it for
		// the last offset it has.
		rec.Publications = append(rec.Publications, pj.buf...)
		if o.Since != nil {
			rec.Position = broker.Position{Offset: pj.buf[n-1].Offset, Epoch: l.epoch}
		}
	} else if l.epoch != st.Position.Epoch || l.last != st.Position.Offset {
		if l.epoch != "" && l.epoch != st.Position.Epoch && b.o.OnGap != nil {
			// The stream was made again (its keys expired, or Redis lost
			// them) under subscribers that hold its old epoch.
			b.o.OnGap(channel)
		}
		l.epoch, l.last = st.Position.Epoch, st.Position.Offset
	}
	delete(l.joins, id)
	return join(rec)
}

// listen makes sure this node is subscribed to the channel's pub/sub
// stream, and waits until Redis has confirmed it: only then can a join's
// marker come back. l must be pinned (acquire), so that Sweep keeps it.
func (b *Broker) listen(ctx context.Context, l *local) error {
	for {
		l.mu.Lock()
		state, done := l.sub, l.subDone
		if state == subNone {
			l.sub, l.subDone = subAsked, make(chan struct{})
			done = l.subDone
		}
		l.mu.Unlock()
		switch state {
		case subLive:
			return nil
		case subNone:
			// Under subMu, so that this SUBSCRIBE goes after the UNSUBSCRIBE
			// of a local state Sweep dropped for the same channel (see
			// Sweep), and to the current PubSub: a new one subscribes to
			// every channel asked before it.
			b.subMu.Lock()
			err := ctx.Err()
			if err == nil {
				// Its own deadline, not what is left of the join's: go-redis
				// takes a write cut short by a deadline for a broken
				// connection, and the connection is every channel's.
				wctx, cancel := b.ctx(context.Background())
				err = b.ps.Subscribe(wctx, b.stream(l.name))
				cancel()
			}
			if err != nil {
				// Not asked after all (a broken connection is replaced, and
				// the new one would not know this channel): the next join
				// asks again, and those waiting look again. Still under
				// subMu, so that a new PubSub subscribes the channel only if
				// this state says to.
				l.mu.Lock()
				if l.subDone == done && l.sub == subAsked {
					l.sub, l.subDone = subNone, nil
					close(done)
				}
				l.mu.Unlock()
			}
			b.subMu.Unlock()
			if err != nil {
				return unavailable(err)
			}
		}
		select {
		case <-done:
			// Confirmed, or a failed SUBSCRIBE: look again.
		case <-ctx.Done():
			return unavailable(errors.New("redis did not confirm the channel's subscription"))
		}
	}
}

// confirmed settles a channel's subscription that Redis confirmed.
func (b *Broker) confirmed(stream string) {
	name, ok := strings.CutPrefix(stream, b.stream(""))
	if !ok {
		return
	}
	l := b.lookup(name)
	if l == nil {
		return // dropped by Sweep since, and unsubscribed
	}
	l.mu.Lock()
	if l.sub == subAsked {
		l.sub = subLive
		close(l.subDone)
	}
	l.mu.Unlock()
}

// History returns retained publications and the current position.
func (b *Broker) History(ctx context.Context, channel string, q broker.HistoryQuery) ([]broker.Publication, broker.Position, error) {
	if !b.live.Load() { // as Publish and Subscribe: at once, not after dialling a Redis that is gone
		return nil, broker.Position{}, broker.ErrUnavailable
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	st, err := b.read(ctx, channel, broker.HistoryOptions{}, true, "", b.gen.Load())
	if err != nil {
		return nil, broker.Position{}, err
	}
	items := st.Items
	if q.Since != nil {
		items = broker.Recover(st, *q.Since).Publications
		if q.Limit > 0 && len(items) > q.Limit {
			items = items[:q.Limit]
		}
	} else if q.Limit > 0 && len(items) > q.Limit {
		items = items[len(items)-q.Limit:]
	}
	return items, st.Position, nil
}

// read runs the read script; marker, when set, is published in the same
// step.
func (b *Broker) read(ctx context.Context, channel string, h broker.HistoryOptions, items bool, marker string, gen uint64) (broker.Stream, error) {
	ch := ""
	if marker != "" {
		ch = b.stream(channel)
	}
	want := "0"
	if items {
		want = "1"
	}
	salt := b.salt.Load()
	r, err := readScript.Run(ctx, b.rdb, []string{b.key("m", channel), b.key("h", channel), b.instance()},
		newEpoch(), b.streamTTL(h), h.Size, h.TTL.Milliseconds(), want, ch, marker, instanceID(salt)).Slice()
	if err != nil {
		b.changed(err, gen)
		return broker.Stream{}, unavailable(err)
	}
	off, err := offsetOf(r, 5, 1)
	if err != nil {
		return broker.Stream{}, unavailable(err)
	}
	st := broker.Stream{
		Position: broker.Position{Offset: off, Epoch: str(r[0]) + *salt},
		LostTime: micros(str(r[2])),
		Born:     micros(str(r[3])),
	}
	raw, _ := r[4].([]any)
	for _, e := range raw {
		p, err := decodeEntry(str(e))
		if err != nil {
			return broker.Stream{}, unavailable(err)
		}
		st.Items = append(st.Items, p)
	}
	return st, nil
}

// micros parses a time in microseconds since the epoch; "0" or "" is the
// zero time.
func micros(s string) time.Time {
	n, _ := strconv.ParseInt(s, 10, 64)
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMicro(n)
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

// Run keeps the pub/sub subscription and delivers what comes through it
// until ctx is done, reconnecting with backoff when Redis is lost. It also
// sweeps idle local state every sweep interval (see Sweep). When it returns
// the connection pool is closed: the broker is done.
func (b *Broker) Run(ctx context.Context, sweep, idle time.Duration, inUse func(channel string) bool) {
	var wg sync.WaitGroup
	for _, q := range b.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.work(ctx, q)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		broker.Every(ctx, sweep, func() { b.Sweep(idle, inUse) })
	}()
	b.receive(ctx)
	b.live.Store(false) // done: Publish and Subscribe answer ErrUnavailable
	wg.Wait()
	_ = b.rdb.Close()
	_ = b.vc.Close()
	_ = b.psc.Close()
}

// pingEvery is how long the subscription may be silent before it is
// pinged; a ping unanswered for as long again counts as a lost connection.
const pingEvery = 5 * time.Second

func (b *Broker) receive(ctx context.Context) {
	// A read blocked on the connection does not see ctx: closing it does.
	closeNow := func() {
		b.subMu.Lock()
		_ = b.ps.Close()
		b.subMu.Unlock()
	}
	stop := context.AfterFunc(ctx, closeNow)
	defer func() {
		stop()
		closeNow()
	}()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		ps, err := b.renew(ctx)
		if err != nil {
			b.lost(ctx, err, &backoff)
			continue
		}
		b.receiveOn(ctx, ps, &backoff)
	}
}

// renew replaces the PubSub with a new one, on a new connection, subscribed
// to the notifications and to every channel whose subscription is asked or
// live here: whatever the old connection held must be asked for again, and
// its confirmation waited for.
func (b *Broker) renew(ctx context.Context) (*redis.PubSub, error) {
	// Bounded as every Redis call is: a peer that accepts and never answers
	// must not hold subMu (joins, Sweep, shutdown) for longer.
	ctx, cancel := context.WithTimeout(ctx, b.o.Timeout)
	defer cancel()
	b.subMu.Lock()
	defer b.subMu.Unlock()
	_ = b.ps.Close()
	b.dialGate.Store(true)
	b.ps = b.psc.Subscribe(ctx) // no channels: it dials on the Subscribe below
	streams := []string{b.pubsub}
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for name, l := range sh.locals {
			l.mu.Lock()
			if l.sub != subNone {
				streams = append(streams, b.stream(name))
			}
			l.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	return b.ps, b.ps.Subscribe(ctx, streams...)
}

// receiveOn delivers what comes through ps until it fails (a lost
// connection, or an unanswered ping), and then reports the loss.
func (b *Broker) receiveOn(ctx context.Context, ps *redis.PubSub, backoff *time.Duration) {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, b.o.pingEvery)
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() && !pinged && ctx.Err() == nil {
				pinged = true
				if perr := ps.Ping(ctx); perr == nil {
					continue
				}
			}
			b.lost(ctx, err, backoff)
			return
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if m.Channel != b.pubsub {
				b.confirmed(m.Channel)
				continue
			}
			if !b.live.Load() {
				if err := b.verify(ctx); err != nil {
					b.lost(ctx, err, backoff)
					return
				}
				*backoff = 50 * time.Millisecond
				b.live.Store(true)
				b.o.Log.Info("redis subscription live", "channel", b.pubsub)
				if b.o.OnLive != nil {
					b.o.OnLive(true)
				}
			}
		case *redis.Message:
			// Not live: not yet confirmed, or lost and not confirmed
			// again; no one here is subscribed (all were closed, and
			// joins are refused) and no publisher waits.
			if b.live.Load() {
				b.dispatch(ctx, item{m: m, gen: b.gen.Load(), salt: b.salt.Load()})
			}
		}
	}
}

// lost handles a lost subscription: every channel with local state is a
// gap (what was published meanwhile never comes), then it waits out the
// backoff.
func (b *Broker) lost(ctx context.Context, err error, backoff *time.Duration) {
	if ctx.Err() != nil {
		return
	}
	if b.live.Swap(false) {
		b.gen.Add(1)
		b.o.Log.Error("redis subscription lost; local subscribers are closed to recover", "err", err)
		if b.o.OnLive != nil {
			b.o.OnLive(false)
		}
		b.resetAll()
	} else {
		b.o.Log.Warn("redis unreachable", "err", err, "retry_in", backoff.String())
	}
	select {
	case <-ctx.Done():
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, 5*time.Second)
}

// resetAll forgets every channel's position, fails the joins in progress
// and reports each channel as a gap.
func (b *Broker) resetAll() {
	var names []string
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		ls := make([]*local, 0, len(sh.locals))
		for _, l := range sh.locals {
			ls = append(ls, l)
		}
		sh.mu.Unlock()
		salt := *b.salt.Load()
		for _, l := range ls {
			l.mu.Lock()
			if raw, ok := strings.CutSuffix(l.epoch, salt); ok && l.epoch != "" {
				b.seen[l.name] = broker.Position{Epoch: raw, Offset: l.last}
			}
			l.epoch, l.last = "", 0
			if l.sub == subLive {
				// renew subscribes the new connection to it; that
				// confirmation makes it live again.
				l.sub, l.subDone = subAsked, make(chan struct{})
			}
			l.settle()
			for _, pj := range l.joins { // their markers may never come
				pj.failed = true
				if !pj.isMarked {
					pj.isMarked = true
					close(pj.marked)
				}
			}
			l.mu.Unlock()
			names = append(names, l.name)
		}
	}
	if b.o.OnGap != nil {
		for _, n := range names {
			b.o.OnGap(n)
		}
	}
}

// dispatch hands a message to the worker of its channel, so one channel's
// publications stay in order.
func (b *Broker) dispatch(ctx context.Context, it item) {
	m := it.m
	if len(m.Payload) < 1 {
		return
	}
	ch, _, ok := cut(m.Payload[1:])
	if !ok {
		b.o.Log.Warn("malformed pub/sub message ignored", "size", len(m.Payload))
		return
	}
	q := b.queues[maphash.String(b.seed, ch)%uint64(len(b.queues))]
	select {
	case q <- it:
	case <-ctx.Done():
	}
}

// item is a message as the receiver hands it to a worker: with the
// generation of the subscription it came through and that Redis's salt.
type item struct {
	m    *redis.Message
	gen  uint64
	salt *string
}

func (b *Broker) work(ctx context.Context, q chan item) {
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-q:
			m := it.m
			if it.gen != b.gen.Load() && m.Payload[0] != 'n' {
				// From a subscription lost since: its channels' subscribers
				// were told (and closed), and a client joined since must not
				// get it. (A notification came whole, and concerns no
				// channel: it is still told.)
				continue
			}
			switch m.Payload[0] {
			case 'p':
				b.onPublication(it)
			case 'j':
				b.onMarker(m.Payload[1:])
			case 'n':
				node, rest, ok := cut(m.Payload[1:])
				if ok && node != b.node && rest != "" && b.o.OnNotify != nil {
					b.o.OnNotify(rest[0], rest[1:])
				}
			}
		}
	}
}

func (b *Broker) onPublication(it item) {
	channel, p, err := decodeMessage(it.m.Payload[1:])
	if err != nil {
		b.o.Log.Warn("malformed publication ignored", "err", err)
		return
	}
	p.Epoch += *it.salt
	l := b.lookup(channel)
	if l == nil {
		if b.o.Deliver != nil {
			b.o.Deliver(channel, &p)
		}
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if it.gen != b.gen.Load() {
		return // lost meanwhile (see work); checked again under the lock resetAll takes
	}
	if l.epoch != "" && (p.Epoch != l.epoch || p.Offset != l.last+1) && b.o.OnGap != nil {
		// Before this publication is delivered: the subscribers' last
		// offset stays before the gap, so their recovery sees it.
		b.o.OnGap(channel)
	}
	n := 0
	if b.o.Deliver != nil {
		n = b.o.Deliver(channel, &p)
	}
	l.epoch, l.last = p.Epoch, p.Offset
	if l.counts != nil {
		l.counts[p.Offset%uint64(len(l.counts))] = delivered{epoch: p.Epoch, offset: p.Offset, n: n}
	}
	if len(l.waiters) > 0 {
		l.settle()
	}
	for _, pj := range l.joins {
		if pj.isMarked && !pj.failed {
			if len(pj.buf) >= maxJoinBuffer {
				pj.failed, pj.buf = true, nil
				continue
			}
			q := p
			q.Origin = ""
			pj.buf = append(pj.buf, q)
		}
	}
}

func (b *Broker) onMarker(s string) {
	channel, rest, ok := cut(s)
	id, _, ok2 := cut(rest)
	if !ok || !ok2 || len(id) <= len(b.node) || id[:len(b.node)] != b.node {
		return // another node's
	}
	l := b.lookup(channel)
	if l == nil {
		return
	}
	l.mu.Lock()
	if pj := l.joins[id]; pj != nil && !pj.isMarked {
		pj.isMarked = true
		close(pj.marked)
	}
	l.mu.Unlock()
}

// Notify sends kind and payload to every other node's Options.OnNotify
// (not to this one's). Notifications from one node arrive in the order it
// sent them; they are not ordered with publications.
func (b *Broker) Notify(ctx context.Context, kind byte, payload string) error {
	if !b.live.Load() {
		return broker.ErrUnavailable
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	if err := b.rdb.Publish(ctx, b.pubsub, "n"+field(b.node)+string(kind)+payload).Err(); err != nil {
		return failed(err)
	}
	return nil
}

// instance is the key of the Redis instance's history: a hash of its id
// (e, the salt of every epoch), the run id of the Redis process it was last
// verified on (r), and whether that Redis was durable each time a node
// verified it (d, "1" or "0").
func (b *Broker) instance() string { return b.o.Prefix + ":instance" }

// instanceID is the instance id a salt carries.
func instanceID(salt *string) string { return strings.TrimPrefix(*salt, "-") }

// errRestarted refuses a pool connection to a Redis process this node has
// not verified (see fence).
var errRestarted = errors.New("redis restarted: its history is being verified")

// fence refuses a new pool connection to any Redis process but the one
// this node verified: a Redis that restarted gets no publish or join from
// this node (which would move its offsets past what verify checks) until
// this node has verified its history.
func (b *Broker) fence(ctx context.Context, cn *redis.Conn) error {
	info, err := cn.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	if id := runID(info); id == "" || id != *b.run.Load() {
		return errRestarted
	}
	return nil
}

func runID(info string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return id
		}
	}
	return ""
}

// changed answers a script refused because the instance's id is not this
// node's salt (Redis was flushed, or another node found its history rolled
// back and gave it a new id): the subscription of generation gen is closed,
// so that the receive loop treats it as lost (local subscribers recover)
// and verifies the instance again.
func (b *Broker) changed(err error, gen uint64) {
	if err == nil || !strings.HasPrefix(err.Error(), "HERALDINSTANCE") {
		return
	}
	b.subMu.Lock()
	if b.gen.Load() == gen {
		_ = b.ps.Close()
	}
	b.subMu.Unlock()
}

// verify decides, before the subscription goes live, whether the history
// Redis holds is the one this node's epochs described, and sets the salt
// and the verified run id. It is: the instance key exists, and either it
// was verified on this same Redis process (no restart since) or Redis was
// durable (appendonly yes, appendfsync always) every time a node verified
// it and is now, and is not a replica promoted since; and no channel this node delivered (the positions kept in
// seen) has a lower offset in the same channel epoch. Otherwise the
// instance gets a new id: every epoch changes and no subscriber recovers
// over history that may have been rolled back. Called by the receive
// goroutine only.
func (b *Broker) verify(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.o.Timeout)
	defer cancel()
	args := make([]any, 0, 2+3*len(b.seen))
	args = append(args, newEpoch()[:8], b.durable(ctx))
	for ch, p := range b.seen {
		args = append(args, b.key("m", ch), p.Epoch, strconv.FormatUint(p.Offset, 10))
	}
	r, err := verifyScript.Run(ctx, b.vc, []string{b.instance()}, args...).StringSlice()
	if err != nil {
		return err
	}
	if len(r) != 3 || r[0] == "" || r[1] == "" {
		return fmt.Errorf("verify script answered %q", r)
	}
	salt := "-" + r[0]
	if r[2] != "1" && *b.salt.Load() != "" {
		b.o.Log.Warn("redis history may have been rolled back (restarted without durable files, older files, or a flush): new epochs, subscribers recover with recovered:false", "instance", r[0])
	}
	b.salt.Store(&salt)
	b.run.Store(&r[1])
	clear(b.seen)
	return nil
}

// durable reports "1" when Redis says it writes every change to its
// append-only file before answering (appendonly yes, appendfsync always),
// else "0" (also when CONFIG GET is not allowed).
func (b *Broker) durable(ctx context.Context) string {
	v, err := b.vc.ConfigGet(ctx, "append*").Result()
	if err != nil || v["appendonly"] != "yes" || v["appendfsync"] != "always" {
		return "0"
	}
	return "1"
}

// Sweep forgets local state of channels idle for idle with no publish or
// join in progress and, per inUse, no local subscribers, and unsubscribes
// this node from their pub/sub streams.
func (b *Broker) Sweep(idle time.Duration, inUse func(channel string) bool) {
	now := b.now()
	var listened []string
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for name, l := range sh.locals {
			switch free, sub := b.idle(l, now, idle, inUse); {
			case !free:
			case sub == subNone:
				delete(sh.locals, name)
			default:
				listened = append(listened, name)
			}
		}
		sh.mu.Unlock()
	}
	// A channel's state goes, and its UNSUBSCRIBE is sent, under subMu: a
	// join that makes the state again after that subscribes after it, so
	// Redis never takes the UNSUBSCRIBE for that join's SUBSCRIBE.
	b.subMu.Lock()
	defer b.subMu.Unlock()
	var gone []string
	for _, name := range listened {
		sh := &b.shards[maphash.String(b.seed, name)%numShards]
		sh.mu.Lock()
		if l := sh.locals[name]; l != nil { // acquired since the first pass, maybe
			if free, _ := b.idle(l, now, idle, inUse); free {
				delete(sh.locals, name)
				gone = append(gone, b.stream(name))
			}
		}
		sh.mu.Unlock()
	}
	if len(gone) == 0 {
		return
	}
	ctx, cancel := b.ctx(context.Background())
	defer cancel()
	if err := b.ps.Unsubscribe(ctx, gone...); err != nil {
		// Their states are gone, so no new connection subscribes them; a
		// write that failed broke this one, which the receive loop replaces.
		b.o.Log.Debug("redis unsubscribe failed", "err", err, "channels", len(gone))
	}
}

// idle reports whether a local state may go, and where its subscription
// stands. The shard's lock must be held.
func (b *Broker) idle(l *local, now time.Time, idle time.Duration, inUse func(channel string) bool) (bool, subState) {
	if l.pins > 0 {
		return false, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.joins) == 0 && len(l.waiters) == 0 && now.Sub(l.touched) >= idle && (inUse == nil || !inUse(l.name)), l.sub
}

// Package memory is herald's default, in-process broker: per-channel offsets,
// epochs, bounded history with TTL, and idempotency keys, all in memory.
//
// Each channel has its own stream and lock; streams are spread over shards so
// that publishes to different channels never share a lock.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/budget"
)

// Broker never waits on shared state: it ignores the contexts it is given.
var (
	_ broker.Broker       = (*Broker)(nil)
	_ broker.HistoryMeter = (*Broker)(nil)
)

const numShards = 64

// keyOverhead is what remembering an idempotency key costs besides the
// key's bytes: its map entry, its place in the channel's key order and the
// string's allocation, rounded up.
const keyOverhead = 128

// keyedStreamOverhead is what a channel's first remembered key costs besides
// the key itself: the key map, and the stream the keys keep alive (a stream
// with live keys is not swept), rounded up.
const keyedStreamOverhead = 1024

// keyBytes is what remembering key counts against the key budget.
func keyBytes(key string) int64 { return int64(len(key)) + keyOverhead }

// Broker is the in-memory broker. The zero value is not usable; call New.
type Broker struct {
	seed     maphash.Seed
	shards   [numShards]shard
	deliver  broker.DeliverFunc
	now      func() time.Time
	maxBytes int64        // history budget of all channels together; 0: none
	used     atomic.Int64 // bytes of history held (pubBytes of each)
	onDrop   func(n int)
	// Idempotency keys: their bytes, the broker's own bound on them, and
	// the process budget they are also counted in (see Options).
	keyBytes    atomic.Int64
	maxKeyBytes int64
	keyBudget   *budget.Budget
}

// pubOverhead is what a kept publication costs besides its data, event and
// publisher: its slot in a ring (a broker.Publication) and the slice and
// string headers' backing allocations, rounded up.
const pubOverhead = 128

// pubBytes is what keeping p in history counts against the budget.
func pubBytes(p *broker.Publication) int64 {
	return int64(len(p.Data) + len(p.Event) + len(p.From) + pubOverhead)
}

type shard struct {
	mu      sync.Mutex
	streams map[string]*stream
}

// stream is one channel. Lock order: docs/architecture.md#lock-order.
type stream struct {
	mu       sync.Mutex
	epoch    string
	offset   uint64
	hist     []broker.Publication // ring: oldest at head
	head     int
	count    int
	lostTime time.Time // time of the newest publication dropped from history, or never kept
	born     time.Time // when this stream was made: what came before is unknown to it
	keys     map[string]idemEntry
	keyOrder []string
	touched  time.Time
	opts     broker.HistoryOptions
	dead     bool // removed by Sweep; holders must look the channel up again
}

type idemEntry struct {
	offset  uint64
	expires time.Time
	cost    int64 // bytes counted for it (see keyBytes)
}

// Options configure a Broker.
type Options struct {
	// Deliver receives every accepted publication for local fan-out. Required.
	Deliver broker.DeliverFunc
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxBytes bounds the history of all channels together, in bytes of
	// data, event and publisher plus a fixed overhead per publication; 0
	// means no bound. A publication that does not fit first evicts its own
	// channel's oldest; when its channel has nothing left to give, it is
	// delivered but not kept. Either way the channel's history has a gap,
	// which recovery past it reports (recovered: false), as for a
	// publication evicted by size or TTL. Channels never evict each other:
	// that would take two channels' locks.
	MaxBytes int64
	// OnDrop, when set, is told of publications dropped from history (or
	// not kept) to stay within MaxBytes. It runs under a channel's lock.
	OnDrop func(n int)
	// MaxKeyBytes bounds the idempotency keys of all channels together, in
	// bytes of key plus a fixed overhead per key and per channel holding
	// keys; 0 means no bound of the broker's own. KeyBudget, when set, counts
	// the same bytes in the process budget (budget.Keys). A key is
	// remembered for its whole window, never forgotten early: a keyed
	// publish whose key does not fit in either (once expired keys are
	// dropped) is refused with broker.ErrIdempotencyFull, and nothing is
	// published.
	MaxKeyBytes int64
	KeyBudget   *budget.Budget
}

// New creates a broker.
func New(o Options) *Broker {
	b := &Broker{seed: maphash.MakeSeed(), deliver: o.Deliver, now: o.Now, maxBytes: o.MaxBytes, onDrop: o.OnDrop,
		maxKeyBytes: o.MaxKeyBytes, keyBudget: o.KeyBudget}
	if b.now == nil {
		b.now = time.Now
	}
	for i := range b.shards {
		b.shards[i].streams = make(map[string]*stream)
	}
	return b
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lock returns the channel's stream, created if needed, with its lock held.
func (b *Broker) lock(channel string) *stream {
	sh := &b.shards[maphash.String(b.seed, channel)%numShards]
	for {
		sh.mu.Lock()
		s := sh.streams[channel]
		if s == nil {
			now := b.now()
			s = &stream{epoch: newEpoch(), touched: now, born: now}
			sh.streams[channel] = s
		}
		sh.mu.Unlock()
		s.mu.Lock()
		if !s.dead {
			return s
		}
		s.mu.Unlock()
	}
}

// Publish assigns the next offset, stores the publication in history when
// the channel keeps one, and hands it to Deliver — all under the channel's
// lock, so offsets are delivered in order and never race a recovering join.
// A keyed publish whose key cannot be remembered for its whole window
// (Options.MaxKeyBytes, Options.KeyBudget) is refused with
// broker.ErrIdempotencyFull before anything is published.
func (b *Broker) Publish(_ context.Context, channel string, p broker.Publication, o broker.PublishOptions) (broker.PublishResult, error) {
	s := b.lock(channel)
	defer s.mu.Unlock()
	now := b.now()
	s.touched = now
	s.opts = o.History
	if o.IdempotencyKey != "" {
		if e, ok := s.keys[o.IdempotencyKey]; ok && now.Before(e.expires) {
			return broker.PublishResult{Position: broker.Position{Offset: e.offset, Epoch: s.epoch}, Duplicate: true}, nil
		}
	}
	var keyCost int64
	if o.IdempotencyKey != "" && o.IdempotencyWindow > 0 {
		var ok bool
		if keyCost, ok = s.reserveKey(b, o.IdempotencyKey, now); !ok {
			return broker.PublishResult{}, broker.ErrIdempotencyFull
		}
	}
	s.offset++
	p.Offset = s.offset
	p.Time = now
	s.trim(b, now)
	if o.History.Size > 0 {
		h := p
		h.Origin = ""
		b.keep(s, h, o.History.Size)
	} else {
		s.lostTime = now // not kept: recovery by time past it sees the gap
	}
	if o.IdempotencyKey != "" && o.IdempotencyWindow > 0 {
		s.remember(b, o.IdempotencyKey, idemEntry{offset: p.Offset, expires: now.Add(o.IdempotencyWindow), cost: keyCost})
	}
	n := 0
	if b.deliver != nil {
		p.Epoch = s.epoch
		n = b.deliver(channel, &p)
	}
	return broker.PublishResult{Position: broker.Position{Offset: s.offset, Epoch: s.epoch}, Delivered: n}, nil
}

// keep stores p in s's history of at most size publications, within the
// broker's byte budget (see Options.MaxBytes). s.mu must be held.
func (b *Broker) keep(s *stream, p broker.Publication, size int) {
	if len(s.hist) > size {
		s.relayout(b, size)
	}
	if s.count == len(s.hist) && len(s.hist) == size {
		s.dropOldest(b) // the ring is full: the oldest makes room
	}
	need := pubBytes(&p)
	dropped := 0
	for !b.reserve(need) {
		if s.count == 0 {
			s.lostTime = p.Time // not kept: recovery past it sees the gap
			dropped++
			b.dropped(dropped)
			return
		}
		s.dropOldest(b)
		dropped++
	}
	b.dropped(dropped)
	if s.count == len(s.hist) {
		s.relayout(b, min(max(2*len(s.hist), 8), size))
	}
	s.hist[(s.head+s.count)%len(s.hist)] = p
	s.count++
}

// reserve counts n more bytes of history, unless that would pass the
// budget.
func (b *Broker) reserve(n int64) bool {
	for {
		u := b.used.Load()
		if b.maxBytes > 0 && u+n > b.maxBytes {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// dropped reports n publications dropped for the budget.
func (b *Broker) dropped(n int) {
	if n > 0 && b.onDrop != nil {
		b.onDrop(n)
	}
}

// HistoryBytes is how many bytes of history all channels hold, as counted
// against Options.MaxBytes.
func (b *Broker) HistoryBytes() int64 { return b.used.Load() }

// dropOldest evicts s's oldest kept publication. s.mu must be held and
// s.count > 0.
func (s *stream) dropOldest(b *Broker) {
	old := &s.hist[s.head]
	s.lostTime = old.Time
	b.used.Add(-pubBytes(old))
	*old = broker.Publication{}
	s.head = (s.head + 1) % len(s.hist)
	s.count--
}

// relayout copies the retained publications, oldest first, into a ring of n
// slots, dropping the oldest if they do not fit. s.mu must be held.
func (s *stream) relayout(b *Broker, n int) {
	for s.count > n {
		s.dropOldest(b)
	}
	h := make([]broker.Publication, n)
	copy(h, s.ordered())
	s.hist, s.head = h, 0
}

// ordered returns the retained publications, oldest first. s.mu must be held.
func (s *stream) ordered() []broker.Publication {
	out := make([]broker.Publication, 0, s.count)
	for i := 0; i < s.count; i++ {
		out = append(out, s.hist[(s.head+i)%len(s.hist)])
	}
	return out
}

// trim drops publications older than the TTL. s.mu must be held.
func (s *stream) trim(b *Broker, now time.Time) {
	if s.opts.TTL <= 0 {
		return
	}
	cut := now.Add(-s.opts.TTL)
	for s.count > 0 && !s.hist[s.head].Time.After(cut) {
		s.dropOldest(b)
	}
}

// reserveKey counts what remembering key on s costs (dropping s's expired
// keys first), and reports whether it fits and the key's own cost (without
// the channel's, which its last key gives back). s.mu must be held;
// key is not remembered on s, or only expired.
func (s *stream) reserveKey(b *Broker, key string, now time.Time) (int64, bool) {
	s.expireKeys(b, now)
	cost := keyBytes(key)
	if _, ok := s.keys[key]; ok { // expired but still held: its place is reused
		cost = 0
	}
	n := cost
	if s.keys == nil {
		n += keyedStreamOverhead // given back by expireKeys with the last key
	}
	if !b.reserveKeys(n) {
		return 0, false
	}
	return cost, true
}

// reserveKeys counts n more bytes of keys, unless that would pass
// MaxKeyBytes or the process budget.
func (b *Broker) reserveKeys(n int64) bool {
	if n == 0 {
		return true
	}
	if u := b.keyBytes.Add(n); b.maxKeyBytes > 0 && u > b.maxKeyBytes {
		b.keyBytes.Add(-n)
		return false
	}
	if b.keyBudget != nil && !b.keyBudget.Reserve(budget.Keys, n) {
		b.keyBytes.Add(-n)
		return false
	}
	return true
}

// releaseKeys gives back n bytes of keys.
func (b *Broker) releaseKeys(n int64) {
	if n == 0 {
		return
	}
	b.keyBytes.Add(-n)
	if b.keyBudget != nil {
		b.keyBudget.Release(n)
	}
}

// KeyBytes is how many bytes idempotency keys take, as counted against
// Options.MaxKeyBytes.
func (b *Broker) KeyBytes() int64 { return b.keyBytes.Load() }

// remember records an idempotency key whose cost reserveKey counted. s.mu
// must be held.
func (s *stream) remember(b *Broker, key string, e idemEntry) {
	if s.keys == nil {
		s.keys = make(map[string]idemEntry)
	}
	if old, ok := s.keys[key]; ok {
		e.cost += old.cost // an expired entry replaced: its bytes stay counted, once
	} else {
		s.keyOrder = append(s.keyOrder, key)
	}
	s.keys[key] = e
}

// expireKeys forgets s's expired keys and gives their bytes back. Keys are
// remembered in publish order, and a channel's window is its namespace's,
// so they expire from the front; a key whose window differs is forgotten
// when it and every key before it have expired. s.mu must be held.
func (s *stream) expireKeys(b *Broker, now time.Time) {
	for len(s.keyOrder) > 0 {
		k := s.keyOrder[0]
		e, ok := s.keys[k]
		if ok && now.Before(e.expires) {
			break
		}
		s.keyOrder[0] = ""
		s.keyOrder = s.keyOrder[1:]
		if ok {
			delete(s.keys, k)
			b.releaseKeys(e.cost)
		}
	}
	if len(s.keys) == 0 && s.keys != nil {
		s.keys, s.keyOrder = nil, nil
		b.releaseKeys(keyedStreamOverhead)
	}
}

// recover computes what a subscriber asking for since gets. s.mu must be held.
func (s *stream) recover(b *Broker, since broker.Since, now time.Time) broker.Recovery {
	s.trim(b, now)
	return broker.Recover(broker.Stream{
		Position: broker.Position{Offset: s.offset, Epoch: s.epoch},
		Items:    s.ordered(),
		LostTime: s.lostTime,
		Born:     s.born,
	}, since)
}

// Subscribe runs join with the channel's current position (and, when since
// is given, the publications after it) while holding the channel's lock, so
// no publication can slip between the replay and the live stream: join must
// add the subscriber to the live fan-out and queue the replay before it
// returns. join's error is returned.
func (b *Broker) Subscribe(_ context.Context, channel string, o broker.SubscribeOptions, join func(broker.Recovery) error) error {
	s := b.lock(channel)
	defer s.mu.Unlock()
	now := b.now()
	s.touched = now
	if o.History.Size > 0 {
		s.opts = o.History
	}
	since := o.Since
	if since == nil {
		s.trim(b, now)
		return join(broker.Recovery{Position: broker.Position{Offset: s.offset, Epoch: s.epoch}})
	}
	return join(s.recover(b, *since, now))
}

// History returns retained publications and the current position.
func (b *Broker) History(_ context.Context, channel string, q broker.HistoryQuery) ([]broker.Publication, broker.Position, error) {
	s := b.lock(channel)
	defer s.mu.Unlock()
	now := b.now()
	s.touched = now
	var items []broker.Publication
	if q.Since != nil {
		items = s.recover(b, *q.Since, now).Publications
		if q.Limit > 0 && len(items) > q.Limit {
			items = items[:q.Limit]
		}
	} else {
		s.trim(b, now)
		items = s.ordered()
		if q.Limit > 0 && len(items) > q.Limit {
			items = items[len(items)-q.Limit:]
		}
	}
	return items, broker.Position{Offset: s.offset, Epoch: s.epoch}, nil
}

// Run frees memory until ctx is done: every interval it drops expired
// history and forgets streams that hold no history, no live idempotency key
// and have been idle for idle, unless inUse reports local subscribers.
func (b *Broker) Run(ctx context.Context, interval, idle time.Duration, inUse func(channel string) bool) {
	broker.Every(ctx, interval, func() { b.Sweep(idle, inUse) })
}

// Sweep is one pass of Run.
func (b *Broker) Sweep(idle time.Duration, inUse func(channel string) bool) {
	now := b.now()
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for name, s := range sh.streams {
			s.mu.Lock()
			s.trim(b, now)
			s.expireKeys(b, now)
			// A channel that keeps history keeps its epoch for the history's TTL.
			keep := max(idle, s.opts.TTL)
			free := s.count == 0 && len(s.keys) == 0 && now.Sub(s.touched) >= keep && (inUse == nil || !inUse(name))
			s.dead = free
			s.mu.Unlock()
			if free {
				delete(sh.streams, name)
			}
		}
		sh.mu.Unlock()
	}
}

// Streams returns how many channel streams are held (for tests and metrics).
func (b *Broker) Streams() int {
	n := 0
	for i := range b.shards {
		b.shards[i].mu.Lock()
		n += len(b.shards[i].streams)
		b.shards[i].mu.Unlock()
	}
	return n
}

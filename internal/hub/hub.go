// Package hub keeps track of who is connected and who is subscribed to what,
// and delivers messages to them, whatever transport carries each. It never
// blocks on a socket: each Client has a bounded queue of bytes drained by
// its own writer. It knows no protocol's framing: transports register the
// encodings of shared messages (wires) and frame their keepalives and
// closes (see Transport and Message in wire.go).
//
// State is sharded (by channel name, user id and client id) so that publishes,
// subscribes and connects on different keys do not contend on one lock.
package hub

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/internal/gogroup"
	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/sparselog"
)

const numShards = 64

// ErrShuttingDown is returned by Register once Shutdown has begun.
var ErrShuttingDown = errors.New("hub: shutting down")

// ErrServerFull is returned by Register when the hub holds
// Options.MaxConnections clients.
var ErrServerFull = errors.New("hub: connection limit reached")

// ErrUserFull is returned by Register when the client's user already has
// Options.MaxUserConnections clients.
var ErrUserFull = errors.New("hub: connection limit of the user reached")

// Options configure a Hub.
type Options struct {
	// QueueBytes bounds each client's send queue. Required (> 0).
	QueueBytes int
	// PingInterval is how often an idle client is pinged. Required.
	PingInterval time.Duration
	// PongTimeout closes a client silent for this long. Required.
	PongTimeout time.Duration
	// MaxSubscriptions bounds channels per client; 0 means no bound.
	MaxSubscriptions int
	// MaxConnections bounds the clients registered at once; 0 means no bound.
	MaxConnections int
	// MaxUserConnections bounds the clients of one user registered at once;
	// 0 means no bound.
	MaxUserConnections int
	// Group counts the goroutines the hub starts per client (writers that
	// finish a write in blocking mode, closes, removals, grace timers);
	// nil: a group of the hub's own. Its owner waits on it after Shutdown.
	Group *gogroup.Group
	// OnRemove, when set, is called after a client left the hub, with the
	// channels it was subscribed to. No hub lock is held while it runs.
	OnRemove func(c *Client, channels []string)
	// IOUring lets the writer pool write many clients with one io_uring
	// submission where the kernel allows it; else (and when false) each
	// client is one writev.
	IOUring bool
	// Sparse logs the hub's per-client closes for cause (a slow consumer,
	// no pong, expired credentials, a stuck write, the memory budget) one
	// line per reason per interval; nil: one of the hub's own on its log.
	Sparse *sparselog.Logger
}

// Hub is the registry of clients, users and channels. All methods are safe
// for concurrent use.
type Hub struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics.Metrics
	seed    maphash.Seed

	channels [numShards]channelShard
	users    [numShards]userShard
	clients  [numShards]clientShard

	numClients  atomic.Int64
	numChannels atomic.Int64
	numSubs     atomic.Int64

	closing atomic.Bool
	wires   wires
	group   *gogroup.Group
	writers *writerPool
	writevs sync.Pool // *writev, for writes outside the pool's workers (Greet)
}

type channelShard struct {
	mu       sync.RWMutex
	channels map[string]*channel
}

type channel struct {
	// members in subscription order: a publication is queued, and so
	// written, in that order every time (see Publish); index finds a
	// client's place.
	members []member
	index   map[*Client]int
}

// member is one client's subscription to a channel.
type member struct {
	c *Client
	subscription
}

// set adds c, or replaces its subscription.
func (ch *channel) set(c *Client, sub subscription) {
	if i, ok := ch.index[c]; ok {
		ch.members[i].subscription = sub
		return
	}
	ch.index[c] = len(ch.members)
	ch.members = append(ch.members, member{c: c, subscription: sub})
}

// remove takes c out and reports whether it was in. The last member takes
// its place.
func (ch *channel) remove(c *Client) bool {
	i, ok := ch.index[c]
	if !ok {
		return false
	}
	last := len(ch.members) - 1
	if i != last {
		ch.members[i] = ch.members[last]
		ch.index[ch.members[i].c] = i
	}
	ch.members[last] = member{}
	ch.members = ch.members[:last]
	delete(ch.index, c)
	ch.shrink()
	return true
}

// shrinkFrom is the capacity from which a channel gives memory back.
const shrinkFrom = 64

// shrink gives back what a crowd that has left held: once a quarter or
// less of the member slice's capacity is in use, the slice is copied to one
// that fits and the index rebuilt (a Go map never shrinks by itself). Each
// shrink follows at least three removals per member it copies, so a removal
// still costs O(1) amortized; the order is kept.
func (ch *channel) shrink() {
	n := len(ch.members)
	if cap(ch.members) < shrinkFrom || n > cap(ch.members)/4 {
		return
	}
	ch.members = slices.Clone(ch.members)
	ch.index = make(map[*Client]int, n)
	for i, m := range ch.members {
		ch.index[m.c] = i
	}
}

// subscription is one client's membership of a channel.
type subscription struct {
	// events, when non-nil, is the set of event names delivered; publications
	// with other events (or none) are skipped.
	events []string
}

func (s subscription) wants(event string) bool { return WantsEvent(s.events, event) }

// WantsEvent reports whether a subscription filtering on events (nil: no
// filter) receives a publication with event.
func WantsEvent(events []string, event string) bool {
	return events == nil || slices.Contains(events, event)
}

type userShard struct {
	mu    sync.RWMutex
	users map[string][]*Client // a slice: most users have one or two connections
}

type clientShard struct {
	mu      sync.RWMutex
	clients map[string]*Client
}

// New creates a hub. Call Run to start heartbeats and expiry checks.
func New(o Options, log *slog.Logger, m *metrics.Metrics) *Hub {
	if o.Sparse == nil {
		o.Sparse = sparselog.New(log, sparselog.Interval)
	}
	h := &Hub{opts: o, log: log, metrics: m, seed: maphash.MakeSeed()}
	for i := range h.channels {
		h.channels[i].channels = make(map[string]*channel)
		h.users[i].users = make(map[string][]*Client)
		h.clients[i].clients = make(map[string]*Client)
	}
	h.group = o.Group
	if h.group == nil {
		h.group = new(gogroup.Group)
	}
	h.writers = newWriterPool(log, o.IOUring, m.UringWorkers)
	h.writevs.New = func() any { return newWritev() }
	return h
}

func (h *Hub) shard(key string) int { return int(maphash.String(h.seed, key) % numShards) }

// Register adds a client to the hub so it can subscribe and receive.
func (h *Hub) Register(c *Client) error {
	if h.closing.Load() {
		return ErrShuttingDown
	}
	// The place is taken before the user's, and given back if the user has
	// none left: concurrent registrations never pass either bound.
	if !h.reserve() {
		return ErrServerFull
	}
	us := &h.users[h.shard(c.UserID)]
	us.mu.Lock()
	list := us.users[c.UserID]
	if limit := h.opts.MaxUserConnections; limit > 0 && len(list) >= limit {
		us.mu.Unlock()
		h.numClients.Add(-1)
		return ErrUserFull
	}
	us.users[c.UserID] = append(list, c)
	us.mu.Unlock()

	cs := &h.clients[h.shard(c.ID)]
	cs.mu.Lock()
	cs.clients[c.ID] = c
	cs.mu.Unlock()

	h.metrics.Connections.Inc()
	h.metrics.ConnectsTotal.Inc()
	c.mu.Lock()
	c.registered = true
	left := c.unregistered
	c.mu.Unlock()
	if left {
		// Found in the indexes and closed (a disconnect of its user, a
		// shutdown) before it was marked registered: unregister saw it
		// unregistered and left the removal to Register.
		h.remove(c, nil)
		return nil
	}
	// A shutdown that started meanwhile may have missed this client.
	if h.closing.Load() {
		c.Close(protocol.CloseGoingAway, "server shutting down")
	}
	return nil
}

// reserve counts one more client, unless that would pass MaxConnections.
func (h *Hub) reserve() bool {
	limit := int64(h.opts.MaxConnections)
	if limit <= 0 {
		h.numClients.Add(1)
		return true
	}
	for {
		n := h.numClients.Load()
		if n >= limit {
			return false
		}
		if h.numClients.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// remove takes a client out of every index. subs is its subscription set.
func (h *Hub) remove(c *Client, subs []string) {
	var left []string
	if h.opts.OnRemove != nil && len(subs) > 0 {
		left = make([]string, 0, len(subs))
	}
	for _, ch := range subs {
		h.unsubscribeShard(c, ch)
		if left != nil {
			left = append(left, ch)
		}
	}
	cs := &h.clients[h.shard(c.ID)]
	cs.mu.Lock()
	delete(cs.clients, c.ID)
	cs.mu.Unlock()

	us := &h.users[h.shard(c.UserID)]
	us.mu.Lock()
	if list := us.users[c.UserID]; list != nil {
		if i := slices.Index(list, c); i >= 0 {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
		}
		if len(list) == 0 {
			delete(us.users, c.UserID)
		} else {
			us.users[c.UserID] = list
		}
	}
	us.mu.Unlock()
	h.numClients.Add(-1)
	h.metrics.Connections.Dec()
	if h.opts.OnRemove != nil {
		h.opts.OnRemove(c, left)
	}
}

// ErrTooManySubscriptions is returned by Subscribe past Options.MaxSubscriptions.
var ErrTooManySubscriptions = protocol.NewError(protocol.CodeTooManySubs, "subscription limit reached")

// ErrClientClosing is returned when subscribing a client that is going away.
var ErrClientClosing = errors.New("hub: client closing")

// Subscribe adds c to channel, receiving only the given events when events is
// non-nil. It reports whether c was already subscribed, in which case the
// event filter is replaced. Permission checks are the caller's job.
func (h *Hub) Subscribe(c *Client, name string, events []string) (already bool, err error) {
	s := &h.channels[h.shard(name)]
	s.mu.Lock()
	defer s.mu.Unlock()
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false, ErrClientClosing
	}
	if slices.Contains(c.subs, name) {
		c.mu.Unlock()
		if ch := s.channels[name]; ch != nil {
			ch.set(c, subscription{events: events})
		}
		return true, nil
	}
	if h.opts.MaxSubscriptions > 0 && len(c.subs) >= h.opts.MaxSubscriptions {
		c.mu.Unlock()
		return false, ErrTooManySubscriptions
	}
	c.subs = append(c.subs, name)
	c.mu.Unlock()

	ch := s.channels[name]
	if ch == nil {
		ch = &channel{index: make(map[*Client]int, 1)}
		s.channels[name] = ch
		h.numChannels.Add(1)
		h.metrics.Channels.Inc()
	}
	ch.set(c, subscription{events: events})
	h.numSubs.Add(1)
	h.metrics.Subscriptions.Inc()
	return false, nil
}

// Unsubscribe removes c from channel and reports whether it was subscribed.
func (h *Hub) Unsubscribe(c *Client, name string) bool {
	c.mu.Lock()
	i := slices.Index(c.subs, name)
	ok := i >= 0
	if ok {
		c.subs = slices.Delete(c.subs, i, i+1)
	}
	c.mu.Unlock()
	if !ok {
		return false
	}
	h.unsubscribeShard(c, name)
	return true
}

func (h *Hub) unsubscribeShard(c *Client, name string) {
	s := &h.channels[h.shard(name)]
	s.mu.Lock()
	if ch := s.channels[name]; ch != nil {
		if ch.remove(c) {
			h.numSubs.Add(-1)
			h.metrics.Subscriptions.Dec()
		}
		if len(ch.members) == 0 {
			delete(s.channels, name)
			h.numChannels.Add(-1)
			h.metrics.Channels.Dec()
		}
	}
	s.mu.Unlock()
}

// Publish queues m to every subscriber of channel except exclude (which
// may be nil) whose event filter accepts event, and returns how many clients
// it was queued to. m is encoded once per wire its subscribers use. It never waits on a client: one whose queue is full is
// closed as a slow consumer.
//
// Subscribers are queued, and so written, in subscription order, starting
// at a random one and wrapping around: nobody is always last, and the
// kernel and the writer meet sockets and clients mostly in the order they
// were made, which is cheaper than a random order (docs/performance.md).
func (h *Hub) Publish(name string, m *Message, exclude *Client, event string) int {
	s := &h.channels[h.shard(name)]
	s.mu.RLock()
	defer s.mu.RUnlock()
	ch := s.channels[name]
	if ch == nil || len(ch.members) == 0 {
		return 0
	}
	members := ch.members
	start := rand.IntN(len(members))
	n := publishTo(members[start:], m, exclude, event)
	return n + publishTo(members[:start], m, exclude, event)
}

// publishTo queues msg to each of members, as Publish does.
func publishTo(members []member, msg *Message, exclude *Client, event string) int {
	n := 0
	for i := range members {
		m := &members[i]
		if m.c == exclude || !m.wants(event) {
			continue
		}
		if m.c.SendMessage(msg) {
			n++
		}
	}
	return n
}

// Announce queues msg, a notice about c (its join or leave), to every
// other subscriber of channel, regardless of event filters. With
// whileMember, only if c still is one: checked under the channel's lock,
// this orders a join before c's leave, since a client removed meanwhile has
// left the channel before its leave is announced, and then its join is not
// sent at all.
func (h *Hub) Announce(name string, msg *Message, c *Client, whileMember bool) {
	s := &h.channels[h.shard(name)]
	s.mu.RLock()
	defer s.mu.RUnlock()
	ch := s.channels[name]
	if ch == nil {
		return
	}
	if _, ok := ch.index[c]; whileMember && !ok {
		return
	}
	for _, m := range ch.members {
		if m.c != c {
			m.c.SendMessage(msg)
		}
	}
}

// HasSubscribers reports whether channel has local subscribers.
func (h *Hub) HasSubscribers(name string) bool {
	s := &h.channels[h.shard(name)]
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.channels[name] != nil
}

// PresenceInfo is one connection on a channel.
type PresenceInfo struct {
	ClientID    string        `json:"clientId"`
	UserID      string        `json:"userId"`
	ConnectedAt protocol.Time `json:"connectedAt"`
}

// Presence lists the connections subscribed to channel, sorted by client id.
func (h *Hub) Presence(name string) []PresenceInfo {
	s := &h.channels[h.shard(name)]
	s.mu.RLock()
	var out []PresenceInfo
	if ch := s.channels[name]; ch != nil {
		out = make([]PresenceInfo, 0, len(ch.members))
		for _, m := range ch.members {
			c := m.c
			out = append(out, PresenceInfo{ClientID: c.ID, UserID: c.UserID, ConnectedAt: protocol.Time(c.ConnectedAt)})
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(a, b int) bool { return out[a].ClientID < out[b].ClientID })
	return out
}

// SendToUser queues m to every live connection of userID, subscribed or
// not, and returns how many.
func (h *Hub) SendToUser(userID string, m *Message) int {
	s := &h.users[h.shard(userID)]
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, c := range s.users[userID] {
		if c.SendMessage(m) {
			n++
		}
	}
	return n
}

// Client returns the connection with id, or nil.
func (h *Hub) Client(id string) *Client {
	s := &h.clients[h.shard(id)]
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clients[id]
}

// UserClients returns the registered connections of userID (a copy).
func (h *Hub) UserClients(userID string) []*Client {
	s := &h.users[h.shard(userID)]
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.users[userID])
}

// DisconnectUser closes every connection of userID with code and returns how many.
func (h *Hub) DisconnectUser(userID string, code int, reason string) int {
	list := h.UserClients(userID)
	for _, c := range list {
		c.Close(code, reason)
	}
	return len(list)
}

// CloseChannel closes every connection subscribed to channel with code and
// returns how many.
func (h *Hub) CloseChannel(name string, code int, reason string) int {
	s := &h.channels[h.shard(name)]
	s.mu.RLock()
	var list []*Client
	if ch := s.channels[name]; ch != nil {
		list = make([]*Client, 0, len(ch.members))
		for _, m := range ch.members {
			list = append(list, m.c)
		}
	}
	s.mu.RUnlock()
	for _, c := range list {
		c.Close(code, reason)
	}
	return len(list)
}

// ChannelStat is one channel and its subscriber count.
type ChannelStat struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
}

// Stats is a snapshot of the hub's size.
type Stats struct {
	Clients       int
	Users         int
	Subscriptions int
	NumChannels   int           // channels with subscribers
	Channels      []ChannelStat // sorted by name; only with Stats(true)
}

// Stats returns a snapshot. Channels are listed only when withChannels is set.
func (h *Hub) Stats(withChannels bool) Stats {
	st := Stats{Clients: int(h.numClients.Load()), Subscriptions: int(h.numSubs.Load()), NumChannels: int(h.numChannels.Load())}
	for i := range h.users {
		s := &h.users[i]
		s.mu.RLock()
		st.Users += len(s.users)
		s.mu.RUnlock()
	}
	if withChannels {
		st.Channels = make([]ChannelStat, 0, h.numChannels.Load())
		for i := range h.channels {
			s := &h.channels[i]
			s.mu.RLock()
			for name, ch := range s.channels {
				st.Channels = append(st.Channels, ChannelStat{Name: name, Subscribers: len(ch.members)})
			}
			s.mu.RUnlock()
		}
		sort.Slice(st.Channels, func(a, b int) bool { return st.Channels[a].Name < st.Channels[b].Name })
	}
	return st
}

// NumClients returns the number of registered clients.
func (h *Hub) NumClients() int { return int(h.numClients.Load()) }

// eachClient calls f for a snapshot of all clients, without holding locks
// while f runs.
func (h *Hub) eachClient(f func(*Client)) {
	var list []*Client
	for i := range h.clients {
		s := &h.clients[i]
		s.mu.RLock()
		for _, c := range s.clients {
			list = append(list, c)
		}
		s.mu.RUnlock()
		for _, c := range list {
			f(c)
		}
		list = list[:0]
	}
}

// Run runs the writer pool, pings idle clients every PingInterval, closes
// those silent for PongTimeout and those whose credentials expired, until ctx
// is done. Until Run starts (and after it returns) each client is written by
// a goroutine of its own.
func (h *Hub) Run(ctx context.Context) {
	poolDone := make(chan struct{})
	go func() { defer close(poolDone); h.writers.run(ctx) }()
	defer func() { <-poolDone }()
	tick := min(max(h.opts.PingInterval/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.sweep(now)
		}
	}
}

func (h *Hub) sweep(now time.Time) {
	n := now.UnixNano()
	ping := h.opts.PingInterval.Nanoseconds()
	timeout := h.opts.PongTimeout.Nanoseconds()
	h.eachClient(func(c *Client) {
		if ws := c.writeStart.Load(); ws != 0 && n-ws > writeTimeout.Nanoseconds() {
			h.opts.Sparse.Warn("write stuck, dropping client", "client", c.ID, "user", c.UserID)
			c.Gone(0)
			return
		}
		switch {
		case !c.ExpiresAt.IsZero() && now.After(c.ExpiresAt):
			h.opts.Sparse.Info("credentials expired, closing", "client", c.ID, "user", c.UserID)
			c.Close(protocol.CloseUnauthorized, "token expired")
		case !c.oneWay.Load() && n-c.lastRead.Load() > timeout:
			h.opts.Sparse.Info("no pong, closing", "client", c.ID, "user", c.UserID)
			c.Close(protocol.CloseNoPong, "no pong")
			// The peer is likely gone, and the writer may be stuck on a full
			// socket: do not wait longer than the close grace.
			c.goneAfter(closeGrace)
		case n-c.lastPing.Load() >= ping:
			c.lastPing.Store(n)
			if ping := c.transport().Ping(); ping != nil {
				c.Send(ping)
			}
		}
	})
}

// Shutdown closes every client with 1001 after its queue is flushed and waits
// until all have gone or ctx is done, then drops the rest.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.closing.Store(true)
	var all []*Client
	h.eachClient(func(c *Client) { all = append(all, c) })
	for _, c := range all {
		c.Close(protocol.CloseGoingAway, "server shutting down")
	}
	for _, c := range all {
		select {
		case <-c.done:
		case <-ctx.Done():
			for _, c := range all {
				c.Gone(0)
			}
			return ctx.Err()
		}
	}
	return nil
}

package hub

import (
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/herald-rt/herald/internal/budget"
	"github.com/herald-rt/herald/internal/gogroup"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/rawio"
	"github.com/herald-rt/herald/internal/stack"
)

const (
	// writeTimeout bounds one batched write to a socket. A client whose socket
	// accepts nothing for this long is dropped (by the hub's sweeper, so the
	// hot path sets no deadline per write).
	writeTimeout = 10 * time.Second
	// slowCloseGrace is how long a slow consumer's in-flight write may still
	// run after it was cut off, before the socket is dropped.
	slowCloseGrace = time.Second
	// closeGrace is how long the server waits for the client's close reply
	// after sending its own close frame.
	closeGrace = 2 * time.Second
)

type clientState uint8

const (
	stateOpen    clientState = iota
	stateClosing             // close queued; no more data accepted
	stateClosed              // gone: socket dropped or close handshake done
)

// Client is one connection as the hub sees it, whatever its transport: an
// identity, a set of subscriptions and a bounded send queue of bytes drained
// by at most one writer goroutine, which exists only while there is
// something to write. Its transport (see Transport, Wire, PerClient) says
// which bytes a shared message, a keepalive and a close are; the hub only
// queues and writes them.
//
// Lock order: docs/architecture.md#lock-order (shard locks before mu).
type Client struct {
	hub *Hub
	nc  net.Conn

	// ID is unique per connection; UserID is the verified user.
	ID          string
	UserID      string
	OrgID       string
	ConnectedAt time.Time
	// ExpiresAt, when non-zero, is when the client's credentials expire.
	ExpiresAt time.Time

	tr     Transport
	wire   Wire
	per    PerClient       // nil: the shared bytes alone
	oneWay atomic.Bool     // the peer never sends: no pong timeout
	onGone func()          // see ClientOptions.OnGone
	raw    syscall.RawConn // for non-blocking writes; nil if nc has no fd

	lastRead atomic.Int64 // unix nanos of the last frame received
	lastPing atomic.Int64 // unix nanos of the last ping queued
	// writeStart is when the write in progress began (unix nanos), 0 when
	// none is: the sweeper drops a client stuck in one write too long.
	writeStart atomic.Int64

	mu          sync.Mutex
	state       clientState
	queue       [][]byte
	spare       [][]byte
	queuedBytes int
	burst       int // bytes of queuedBytes sent with SendBurst, exempt from the bound
	// acct is the user's share of the memory budget: it holds queuedBytes
	// plus inflight, the bytes a writer took and has not finished writing.
	acct       *budget.Account
	inflight   int
	writing    bool
	closeFrame []byte // the transport's last bytes, non-nil while they wait to be written
	closeCode  int
	awaitPeer  bool           // after closeFrame, wait for the peer's answer (Transport.Close)
	grace      *gogroup.Timer // ends the connection if the peer does not answer in time
	peerClosed bool           // the peer closed first: end right after our reply
	subs       []string       // channels subscribed; a slice: most clients have few
	registered bool
	// unregistered: unregister ran before Register marked c registered, so
	// Register, which may be past the indexes already, removes c. Both are
	// read and set under mu: exactly one of the two removes c.
	unregistered bool
	goneDone     bool // Gone has begun: no grace timer is needed any more
	// rebind is a Rebind waiting for the writer role (nil when none): the
	// writer hands the role over instead of writing on (releaseLocked).
	rebind    chan struct{}
	unregOnce sync.Once
	goneOnce  sync.Once
	done      chan struct{} // closed when the reader has stopped (Gone)
}

// ClientOptions describes a new connection.
type ClientOptions struct {
	ID        string
	UserID    string
	OrgID     string
	ExpiresAt time.Time
	// Transport frames the client's keepalives and close; nil sends no
	// keepalive and nothing at a close (the connection is dropped).
	Transport Transport
	// Wire is the encoding of shared messages the client is sent.
	Wire Wire
	// PerClient, when set, adds per-client bytes around each shared
	// message (see PerClient).
	PerClient PerClient
	// OneWay is set for a transport whose peer never sends (Server-Sent
	// Events): the client is pinged but never closed for silence.
	OneWay bool
	// OnGone, when set, runs once when the connection has ended (see Gone).
	OnGone func()
	// Budget is the user's share of the memory budget (nil: none). What is
	// queued for the client is reserved in it until written or dropped: a
	// Send or SendMessage it refuses closes the client (4009), a SendBurst
	// it refuses is not queued. The caller keeps the account open until
	// OnGone has run.
	Budget *budget.Account
}

// NewClient wraps a connection whose transport has been set up (a
// WebSocket upgraded, an event stream's response head prepared). The
// caller reads from nc, if its protocol reads, and calls Touch for every
// message and Gone when reading stops; every write to nc goes through the
// Client, which also ends the connection itself (Gone) when a write fails
// or the peer does not answer a close in time. When nc has no descriptor
// (rawio.RawConn is nil), it is written with blocking Write calls on a
// goroutine of its own (a Write may wait for its peer, bounded by the
// hub's stuck-write check).
func (h *Hub) NewClient(nc net.Conn, o ClientOptions) *Client {
	now := time.Now()
	c := &Client{
		hub:         h,
		nc:          nc,
		ID:          o.ID,
		UserID:      o.UserID,
		OrgID:       o.OrgID,
		ExpiresAt:   o.ExpiresAt,
		tr:          o.Transport,
		wire:        o.Wire,
		per:         o.PerClient,
		onGone:      o.OnGone,
		acct:        o.Budget,
		ConnectedAt: now,
		done:        make(chan struct{}),
		raw:         rawio.RawConn(nc),
	}
	if c.tr == nil {
		c.tr = bare{}
	}
	c.oneWay.Store(o.OneWay)
	c.lastRead.Store(now.UnixNano())
	c.lastPing.Store(now.UnixNano())
	return c
}

// bare is the Transport of a client given none.
type bare struct{}

func (bare) Ping() []byte                     { return nil }
func (bare) Close(int, string) ([]byte, bool) { return nil, false }

// Greet registers c with the hub and writes prefix (a handshake response)
// and then frame (a first message framed by the transport; may be nil) in
// one system call, bounded by greetTimeout. c holds its writer role from
// before it is registered until that write is done, so whatever is queued
// for c once it is registered follows frame; setup, when not nil, runs
// after registration and before the write, and what it queues goes out in
// the same write. Call Greet once, instead of Register.
//
// It returns ErrServerFull or ErrUserFull, having written nothing and
// registered nothing, when a connection limit refuses c (end c with Gone);
// ErrShuttingDown when the hub is shutting down (c was greeted, then closed
// with 1001); or the write's error (the peer is gone, and so is c).
func (c *Client) Greet(prefix, frame []byte, setup func()) error {
	c.mu.Lock()
	if c.registered || c.writing {
		c.mu.Unlock()
		return errors.New("hub: Greet twice, or after Register")
	}
	c.writing = true
	c.mu.Unlock()
	regErr := c.hub.Register(c)
	if errors.Is(regErr, ErrServerFull) || errors.Is(regErr, ErrUserFull) {
		c.mu.Lock()
		c.writing = false
		c.state = stateClosed // never open: its end is not a disconnect
		c.mu.Unlock()
		return regErr
	}
	if setup != nil && regErr == nil {
		setup()
	}

	// A new connection's socket buffer is empty: one non-blocking writev
	// nearly always takes the whole greeting, with no deadline to set and
	// clear. Only what it leaves is written in blocking mode.
	batch := [][]byte{prefix, frame}
	c.mu.Lock()
	if len(c.queue) > 0 && c.state == stateOpen {
		queued := c.takeLocked()
		batch = append(batch, queued...)
		c.recycleLocked(queued)
	}
	c.mu.Unlock()
	w := c.hub.writevs.Get().(*writev)
	n, done, err := c.tryWritev(w, batch)
	c.hub.writevs.Put(w)
	if err == nil && !done {
		_ = c.nc.SetWriteDeadline(time.Now().Add(greetTimeout))
		rest := unwritten(batch, n)
		var m int64
		m, err = rest.WriteTo(c.nc)
		n += int(m)
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	c.hub.metrics.BytesOut.Add(float64(n))
	if err != nil {
		c.Gone(0)
		return err
	}
	c.hub.metrics.MessagesOut.Add(float64(len(batch) - 1))

	c.mu.Lock()
	c.handOffLocked()
	if regErr != nil {
		// Greeted, so a connection as its client sees it, though the hub
		// never held it: counted as one, as its close is counted.
		c.hub.metrics.ConnectsTotal.Inc()
		c.Close(protocol.CloseGoingAway, "server shutting down")
		return regErr
	}
	return nil
}

// greetTimeout bounds Greet's write: a new connection's socket buffer is
// empty, so only a peer that is gone can hold it up.
const greetTimeout = 10 * time.Second

// Touch records that a message (or a keepalive's answer) arrived from the
// client.
func (c *Client) Touch() { c.lastRead.Store(time.Now().UnixNano()) }

// Send queues bytes framed by the client's transport (an answer to its
// command, a pong), to be written as they are. It never blocks. It returns
// false when the client is closing or the bytes would overflow the queue,
// in which case the client is closed as a slow consumer. frame must not
// change once queued.
func (c *Client) Send(frame []byte) bool {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	if !c.admitLocked(len(frame)) {
		return false
	}
	c.appendAndUnlock(frame)
	return true
}

// admitLocked reports whether n more bytes may be queued: within the queue
// bound (bursts exempt) and reserved in the memory budget. When not, it
// closes c — 4008 past the queue bound, 4009 past the budget — and
// releases c.mu. c.mu must be held and c open.
func (c *Client) admitLocked(n int) bool {
	if c.overflowsLocked(n) {
		c.closeSlowAndUnlock()
		return false
	}
	if !c.acct.Reserve(budget.Queue, n) {
		c.beginCloseLocked(protocol.CloseOverBudget, "memory budget reached", true)
		c.mu.Unlock()
		c.hub.opts.Sparse.Warn("memory budget reached: queue refused, closing", "client", c.ID, "user", c.UserID, "bytes", n)
		c.afterBeginClose(true)
		return false
	}
	return true
}

// releaseQueueLocked drops the queue's bytes from the budget's count, the
// queue having been dropped. c.mu must be held.
func (c *Client) releaseQueueLocked() {
	c.acct.Release(c.queuedBytes)
	c.queuedBytes, c.burst = 0, 0
}

// overflowsLocked reports whether n more bytes would pass the queue bound
// (bursts exempt). c.mu must be held.
func (c *Client) overflowsLocked(n int) bool {
	return c.queuedBytes-c.burst+n > c.hub.opts.QueueBytes
}

// closeSlowAndUnlock closes c as a slow consumer (4008), dropping its queue,
// and releases c.mu. c.mu must be held and c open.
func (c *Client) closeSlowAndUnlock() {
	queued := c.queuedBytes
	c.beginCloseLocked(4008, "slow consumer", true)
	c.mu.Unlock()
	c.hub.metrics.SlowConsumers.Inc()
	c.hub.opts.Sparse.Warn("slow consumer closed", "client", c.ID, "user", c.UserID, "queued_bytes", queued)
	c.afterBeginClose(true)
}

// appendAndUnlock queues frame, releases c.mu and makes sure a writer will
// flush the queue. c.mu must be held.
func (c *Client) appendAndUnlock(frame []byte) {
	c.queue = append(c.queue, frame)
	c.queuedBytes += len(frame)
	c.writeAndUnlock()
}

// writeAndUnlock releases c.mu and makes sure a writer will flush the
// queue. c.mu must be held.
func (c *Client) writeAndUnlock() {
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.hub.writers.schedule(c)
	}
}

// QueuedBurst is how many bytes of earlier SendBursts are still queued (not
// yet taken by a writer).
func (c *Client) QueuedBurst() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.burst
}

// Bytes returns m as c's wire encodes it (encoding it if no recipient on
// that wire has yet), without any per-client bytes.
func (c *Client) Bytes(m *Message) []byte { return m.Bytes(c.wire) }

// SendMessage queues m, encoded for c's wire (see Message), or as c's
// PerClient chooses (with its per-client bytes around it, or nothing when
// it skips m); otherwise as Send.
func (c *Client) SendMessage(m *Message) bool {
	b := m.Bytes(c.wire)
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	if c.per == nil {
		if !c.admitLocked(len(b)) {
			return false
		}
		c.appendAndUnlock(b)
		return true
	}
	before, b, after := c.per.Wrap(m, b)
	if b == nil {
		c.mu.Unlock()
		return true
	}
	if !c.admitLocked(len(before) + len(b) + len(after)) {
		return false
	}
	c.queue = appendWrapped(c.queue, before, b, after)
	c.queuedBytes += len(before) + len(b) + len(after)
	c.writeAndUnlock()
	return true
}

// appendWrapped appends the non-empty parts of one wrapped message.
func appendWrapped(q [][]byte, before, b, after []byte) [][]byte {
	if len(before) > 0 {
		q = append(q, before)
	}
	q = append(q, b)
	if len(after) > 0 {
		q = append(q, after)
	}
	return q
}

// SendBurst queues first (bytes framed by the transport, such as the answer
// to a subscribe; nil for none) and then msgs, together and exempt from the
// queue bound: a replay of history, or an answer whose size the caller has
// bounded. What is sent later is bounded as usual. It returns false when
// the client is closing, or (queueing nothing, and leaving c open) when the
// memory budget refuses the burst.
func (c *Client) SendBurst(first []byte, msgs []*Message) bool {
	bufs := make([][]byte, len(msgs))
	n := len(first)
	for i, m := range msgs {
		bufs[i] = m.Bytes(c.wire)
		n += len(bufs[i])
	}
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	if c.per != nil {
		wrapped := make([][]byte, 0, len(bufs))
		for i, b := range bufs {
			n -= len(b)
			before, b, after := c.per.Wrap(msgs[i], b)
			if b == nil {
				continue
			}
			wrapped = appendWrapped(wrapped, before, b, after)
			n += len(before) + len(b) + len(after)
		}
		bufs = wrapped
	}
	if !c.acct.Reserve(budget.Reply, n) {
		c.mu.Unlock()
		return false
	}
	if first != nil {
		c.queue = append(c.queue, first)
	}
	c.queue = append(c.queue, bufs...)
	c.queuedBytes += n
	c.burst += n
	c.writeAndUnlock()
	return true
}

// PerClient is the PerClient the client was made with (nil for none): a
// transport finds its own connection state from a hub client with it.
func (c *Client) PerClient() PerClient { return c.per }

// Close sends what is queued, then the transport's close (see
// Transport.Close) with code and reason, and ends the connection. It is
// idempotent; the first code wins.
func (c *Client) Close(code int, reason string) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	c.beginCloseLocked(code, reason, false)
	c.mu.Unlock()
	c.afterBeginClose(false)
}

// CloseReply answers the peer's close (a WebSocket close frame) with the
// transport's close for code after what is queued, then ends the connection
// without waiting for anything more.
func (c *Client) CloseReply(code int) {
	c.mu.Lock()
	c.peerClosed = true
	switch c.state {
	case stateClosing: // our close is queued: end right after writing it
		c.mu.Unlock()
		return
	case stateClosed: // our close was sent: the handshake is complete
		c.mu.Unlock()
		c.Gone(0)
		return
	}
	c.beginCloseLocked(code, "", false)
	c.mu.Unlock()
	c.afterBeginClose(false)
}

// beginCloseLocked moves the client to closing. When drop is true the queue is
// discarded (slow consumer). c.mu must be held.
func (c *Client) beginCloseLocked(code int, reason string, drop bool) {
	c.state = stateClosing
	c.closeCode = code
	c.closeFrame, c.awaitPeer = c.tr.Close(code, reason)
	if c.closeFrame == nil {
		c.closeFrame = []byte{} // non-nil: the close is still to be made
	}
	if drop {
		clear(c.queue)
		c.queue = c.queue[:0]
		c.releaseQueueLocked()
	}
}

// afterBeginClose finishes what beginCloseLocked started, without c.mu held.
// It may be called while the caller holds a hub shard read lock, so it must
// not take shard locks itself: unregistering happens on another goroutine.
func (c *Client) afterBeginClose(slow bool) {
	c.hub.metrics.Disconnects.WithLabelValues(protocol.CloseLabel(c.closeCode)).Inc()
	if slow {
		_ = c.nc.SetWriteDeadline(time.Now().Add(slowCloseGrace))
	}
	c.mu.Lock()
	c.writeAndUnlock()
	c.hub.group.Go(c.unregister)
}

// writeLoop is the blocking-mode writer: a client whose socket filled up
// gets this goroutine (see writeRest) until its queue is empty. Exactly one
// of the pool or this loop writes a client at a time (the writing flag).
func (c *Client) writeLoop() {
	for {
		batch, closing := c.next()
		if batch == nil {
			if closing != nil {
				c.finishClose(closing)
			}
			return
		}
		if !c.blockingWrite(batch, net.Buffers(batch)) {
			return
		}
	}
}

// blockingWrite writes bufs (what is left of batch) in blocking mode,
// tracked by the sweeper's stuck-write check. On failure it ends the
// connection and reports false.
func (c *Client) blockingWrite(batch [][]byte, bufs net.Buffers) bool {
	if !c.writeTo(c.nc, batch, bufs) {
		return false
	}
	c.mu.Lock()
	c.recycleLocked(batch)
	c.mu.Unlock()
	return true
}

// writeTo writes bufs (what is left of batch) to nc in blocking mode,
// tracked by the sweeper's stuck-write check; on failure it ends the
// connection and reports false.
func (c *Client) writeTo(nc net.Conn, batch [][]byte, bufs net.Buffers) bool {
	c.writeStart.Store(time.Now().UnixNano())
	n, err := bufs.WriteTo(nc)
	c.writeStart.Store(0)
	c.hub.metrics.BytesOut.Add(float64(n))
	if err != nil {
		c.failWrite(batch)
		return false
	}
	c.hub.metrics.MessagesOut.Add(float64(len(batch)))
	return true
}

// finishClose writes the transport's close; when the transport awaits the
// peer's answer, it half-closes the socket and gives the client closeGrace
// to answer before the read side is cut, else it ends the connection.
func (c *Client) finishClose(frame []byte) {
	var err error
	if len(frame) > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, err = c.nc.Write(frame)
	}
	c.mu.Lock()
	c.state = stateClosed
	c.releaseLocked()
	end := err != nil || c.peerClosed || !c.awaitPeer
	c.mu.Unlock()
	if end {
		c.Gone(0)
		return
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	// The reader ends the connection when the peer's close arrives; if it
	// does not come in time, end it here.
	c.goneAfter(closeGrace)
}

// goneAfter ends the connection after d unless it has ended by then.
func (c *Client) goneAfter(d time.Duration) {
	t := c.hub.group.AfterFunc(d, func() { c.Gone(0) })
	c.mu.Lock()
	old := c.grace
	c.grace = t
	gone := c.goneDone
	c.mu.Unlock()
	old.Stop()
	if gone {
		t.Stop() // Gone ran meanwhile and missed t
	}
}

// abort drops the socket at once.
func (c *Client) abort() { c.hub.group.Go(func() { c.Gone(0) }) }

// Gone is called by the reader when the connection has ended for any reason.
// code is the close code seen, for metrics (0 if none).
func (c *Client) Gone(code int) {
	c.mu.Lock()
	wasOpen := c.state == stateOpen
	c.state = stateClosed
	c.queue = nil
	c.releaseQueueLocked()
	c.closeFrame = nil
	grace := c.grace
	c.grace = nil
	c.goneDone = true
	c.mu.Unlock()
	grace.Stop()
	if wasOpen {
		label := "abnormal"
		if code != 0 {
			label = protocol.CloseLabel(code)
		}
		c.hub.metrics.Disconnects.WithLabelValues(label).Inc()
	}
	_ = c.nc.Close()
	c.unregister()
	c.goneOnce.Do(func() {
		if c.onGone != nil {
			c.onGone()
		}
		close(c.done)
	})
}

// Rebind moves an open client onto another connection, nc, whose
// transport is tr (and whose peer never sends, when oneWay): a transport
// that changes its connection underneath a session (Socket.IO's upgrade
// from long-polling to WebSocket). Once no write is under way, flip runs
// with c's lock held — the switch point: what was queued before it is
// written to the old connection, in order, then drained runs (it returns
// once those bytes have left the old connection for good, or an error,
// which ends c), and only then is anything queued after flip written, to
// nc. Closes begun after flip are tr's. The old connection is not closed
// here: its owner ends it. A Rebind blocks while the old bytes are written
// (bounded like any write by the hub's stuck-write check); call it once,
// from any goroutine but the client's writer. It reports false, having
// changed nothing, when c is closing or gone (or being rebound); Gone
// then closes nc only if c ends after the switch.
func (c *Client) Rebind(nc net.Conn, tr Transport, oneWay bool, flip func(), drained func() error) bool {
	c.mu.Lock()
	if c.state != stateOpen || c.rebind != nil {
		c.mu.Unlock()
		return false
	}
	if c.writing { // the writer hands its role over at its next step
		ready := make(chan struct{})
		c.rebind = ready
		c.mu.Unlock()
		<-ready
		c.mu.Lock()
	} else {
		c.writing = true
	}
	c.rebind = nil
	if c.state != stateOpen {
		c.handOffLocked() // a close began meanwhile: it finishes as usual
		return false
	}
	old := c.nc
	c.nc, c.raw, c.tr = nc, rawio.RawConn(nc), tr
	if c.tr == nil {
		c.tr = bare{}
	}
	c.oneWay.Store(oneWay)
	c.lastRead.Store(time.Now().UnixNano())
	flip()
	var batch [][]byte
	if len(c.queue) > 0 {
		batch = c.takeLocked()
	}
	c.mu.Unlock()
	if len(batch) > 0 && !c.writeTo(old, batch, net.Buffers(batch)) {
		return true
	}
	if err := drained(); err != nil {
		c.failWrite(batch)
		return true
	}
	c.mu.Lock()
	c.recycleLocked(batch)
	c.handOffLocked()
	return true
}

// releaseLocked gives up the writer role: to a Rebind waiting for it, else
// for good. c.mu must be held.
func (c *Client) releaseLocked() {
	if c.rebind != nil {
		close(c.rebind)
		c.rebind = nil
		return // the role is the Rebind's now
	}
	c.writing = false
}

// transport is c's Transport (it changes at a Rebind).
func (c *Client) transport() Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr
}

// Done is closed when the connection has ended and the client left the hub.
func (c *Client) Done() <-chan struct{} { return c.done }

// Budget is the user's share of the memory budget the client was made with
// (nil: none), for what its reader holds.
func (c *Client) Budget() *budget.Account { return c.acct }

// RawConn is the connection's RawConn, or nil when it has no descriptor.
func (c *Client) RawConn() syscall.RawConn { return c.raw }

// Closing reports whether the client no longer accepts frames.
func (c *Client) Closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state != stateOpen
}

// Subscribed reports whether the client is subscribed to channel.
func (c *Client) Subscribed(channel string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.subs, channel)
}

// NumSubscriptions returns how many channels the client is subscribed to.
func (c *Client) NumSubscriptions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}

func (c *Client) unregister() {
	c.unregOnce.Do(func() {
		stack.Grow() // often a goroutine of its own; leaving the hub is a deep chain
		c.mu.Lock()
		c.state = max(c.state, stateClosing)
		subs := c.subs
		c.subs = nil
		registered := c.registered
		c.unregistered = !registered // a Register under way removes c itself
		c.mu.Unlock()
		if registered {
			c.hub.remove(c, subs)
		}
	})
}

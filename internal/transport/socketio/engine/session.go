package engine

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/herald-rt/herald/internal/transport/socketio/wire"
)

// out is one queued packet: its shared bytes (the same slice may be queued
// to many sessions, and is never written to) and a per-session tail written
// right after it. A binary packet's bytes are the raw message.
type out struct {
	data, tail []byte
	binary     bool
}

func (o *out) size() int { return len(o.data) + len(o.tail) }

// text returns the packet as it goes into a polling payload.
func (o *out) text() []byte {
	if o.binary {
		return wire.AppendEPacket(nil, wire.EPacket{Type: wire.EMessage, Data: o.data, Binary: true})
	}
	if len(o.tail) == 0 {
		return o.data
	}
	return append(append(make([]byte, 0, o.size()), o.data...), o.tail...)
}

// probing marks a session whose WebSocket upgrade is being accepted.
var probing = &wsConn{}

// Session is one Engine.IO session. Its methods are safe for concurrent
// use.
type Session struct {
	srv *Server
	sid string
	h   Handler

	inMu sync.Mutex // serializes Handler calls

	mu       sync.Mutex
	closed   bool
	upgraded bool          // the WebSocket is the transport (from the start, or upgraded)
	ws       *wsConn       // the transport when upgraded
	probe    *wsConn       // a WebSocket being probed for the upgrade
	queue    []out         // packets not yet written / polled
	queued   int           // bytes in queue
	writing  bool          // a WebSocket writer goroutine runs
	drained  *sync.Cond    // SendWait's wait for the queue to drain; made on first need
	pending  chan struct{} // closed to wake the pending poll; nil when none
	posting  bool          // a POST is being read
	byClient bool          // closed at the client's request, no poll answered since
	timer    *time.Timer
	awaiting bool // a ping was sent, its pong not yet received
}

// ID is the session id.
func (ss *Session) ID() string { return ss.sid }

// Transport names the transport in use: "polling" or "websocket".
func (ss *Session) Transport() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.upgraded {
		return "websocket"
	}
	return "polling"
}

// ErrClosed is returned by writes to a closed session.
var ErrClosed = errors.New("engine.io session closed")

// Send queues one packet: data — a complete text Engine.IO packet such as
// "42[…]", shared with other sessions and never modified — followed by
// tail (per session, may be nil). Past Options.QueueBytes the session is
// closed as a slow consumer.
func (ss *Session) Send(data, tail []byte) error {
	return ss.send(out{data: data, tail: tail})
}

// waitBytes is how much a session may have queued before SendWait waits.
const waitBytes = 256 << 10

// SendWait queues one whole packet like Send, but first waits while the
// session has more than waitBytes queued (and is not bounded by
// QueueBytes), until the client has taken them
// or the session ends: for a producer with a queue of its own, such as the
// hub writing a herald session, whose bound then applies instead.
func (ss *Session) SendWait(data []byte) error {
	ss.mu.Lock()
	ss.waitLocked(func() bool { return ss.queued > waitBytes })
	if ss.closed {
		ss.mu.Unlock()
		return ErrClosed
	}
	// Not bounded by QueueBytes: one packet may be a whole burst the
	// producer's bound exempts (a history answer); the wait above bounds
	// the queue to waitBytes and that packet.
	ss.queue = append(ss.queue, out{data: data})
	ss.queued += len(data)
	ss.kickLocked()
	ss.mu.Unlock()
	return nil
}

// SendBinary queues one binary message packet.
func (ss *Session) SendBinary(data []byte) error {
	return ss.send(out{data: data, binary: true})
}

func (ss *Session) send(o out) error {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return ErrClosed
	}
	if ss.queued+o.size() > ss.srv.o.QueueBytes {
		ss.mu.Unlock()
		ss.srv.report(KindSlowConsumer, errors.New("send queue full"))
		ss.close("slow consumer", true)
		return ErrClosed
	}
	ss.queue = append(ss.queue, o)
	ss.queued += o.size()
	ss.kickLocked()
	ss.mu.Unlock()
	return nil
}

// Close ends the session: a pending poll is answered with a close packet, a
// WebSocket is sent it and closed, and the handler's OnClose runs.
func (ss *Session) Close(reason string) { ss.close(reason, true) }

// close ends the session; byServer says whether the client is told with a
// close packet (a close the client asked for is answered with a noop).
func (ss *Session) close(reason string, byServer bool) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.closed = true
	if ss.drained != nil {
		ss.drained.Broadcast()
	}
	ss.byClient = !byServer && ss.pending == nil // a held poll gets its noop now
	if ss.timer != nil {
		ss.timer.Stop()
	}
	if byServer {
		ss.queue = append(ss.queue, out{data: []byte{byte(wire.EClose)}})
	}
	probe := ss.probe
	if ss.ws != nil && !ss.writing {
		ss.writing = true // the writer sends what is queued, then closes
		ws := ss.ws
		ss.srv.o.Go(func() { ss.writeWS(ws) })
	}
	ss.wakeLocked()
	ss.mu.Unlock()
	if probe != nil && probe != probing {
		probe.closeNow()
	}
	if byServer {
		ss.srv.forget(ss)
	} else {
		// Kept a moment, so a poll racing the client's close gets a noop.
		time.AfterFunc(closedGrace, func() { ss.srv.forget(ss) })
	}
	// Close may be called from the handler's own OnMessage, which holds
	// inMu: OnClose runs after it returns.
	ss.srv.o.Go(func() { ss.closeHandler(reason) })
}

func (ss *Session) closeHandler(reason string) {
	if ss.h == nil {
		return
	}
	ss.inMu.Lock()
	defer ss.inMu.Unlock()
	ss.h.OnClose(reason)
}

// takeLocked empties the queue and returns what was in it.
func (ss *Session) takeLocked() []out {
	q := ss.queue
	ss.queue, ss.queued = nil, 0
	ss.broadcastLocked()
	return q
}

// waitLocked waits while the session is open and busy reports true,
// woken as the queue drains (broadcastLocked). ss.mu is held.
func (ss *Session) waitLocked(busy func() bool) {
	for !ss.closed && busy() {
		if ss.drained == nil {
			ss.drained = sync.NewCond(&ss.mu)
		}
		ss.drained.Wait()
	}
}

// broadcastLocked wakes those waiting for the queue to drain (SendWait,
// Release).
func (ss *Session) broadcastLocked() {
	if ss.drained != nil {
		ss.drained.Broadcast()
	}
}

// kickLocked makes the queue move: wakes the pending poll, or starts the
// WebSocket writer.
func (ss *Session) kickLocked() {
	if !ss.upgraded {
		ss.wakeLocked()
		return
	}
	if ss.writing || ss.ws == nil || len(ss.queue) == 0 {
		return
	}
	ss.writing = true
	ws := ss.ws
	ss.srv.o.Go(func() { ss.writeWS(ws) })
}

func (ss *Session) wakeLocked() {
	if ss.pending != nil {
		close(ss.pending)
		ss.pending = nil
	}
}

// startHeartbeat schedules the first ping; ss.mu is held.
func (ss *Session) startHeartbeat() {
	ss.timer = time.AfterFunc(ss.srv.o.PingInterval, ss.beat)
}

// beat sends a ping, or closes a session whose last ping went unanswered.
func (ss *Session) beat() {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	if ss.awaiting {
		ss.mu.Unlock()
		ss.srv.report(KindPingTimeout, errors.New("no pong within pingTimeout"))
		ss.close("ping timeout", true)
		return
	}
	ss.awaiting = true
	ss.timer.Reset(ss.srv.o.PingTimeout)
	ss.queue = append(ss.queue, out{data: pingPacket})
	ss.queued++
	ss.kickLocked()
	ss.mu.Unlock()
}

// probeNoop is how soon a poll held during an upgrade's probe is answered
// with a noop; closedGrace how long a session the client closed still
// answers polls (with a noop) rather than 400.
const (
	probeNoop   = 100 * time.Millisecond
	closedGrace = time.Second
)

var (
	pingPacket  = []byte{byte(wire.EPing)}
	noopPacket  = []byte{byte(wire.ENoop)}
	probePacket = []byte("3probe")
)

// pong records the client's answer to a ping.
func (ss *Session) pong() {
	ss.mu.Lock()
	if !ss.closed && ss.awaiting {
		ss.awaiting = false
		ss.timer.Reset(ss.srv.o.PingInterval)
	}
	ss.mu.Unlock()
}

// handle runs one packet from the client, on either transport; it reports
// false when the session is to end.
func (ss *Session) handle(p wire.EPacket) bool {
	switch p.Type {
	case wire.EMessage:
		data := append([]byte(nil), p.Data...)
		ss.inMu.Lock()
		closed := ss.isClosed()
		if !closed {
			ss.h.OnMessage(data, p.Binary)
		}
		ss.inMu.Unlock()
		return !closed
	case wire.EPong:
		ss.pong()
	case wire.EPing: // v4 clients only ping to probe; answered anyway
		_ = ss.Send(append([]byte{byte(wire.EPong)}, p.Data...), nil)
	case wire.EClose:
		ss.close("client close", false)
		return false
	case wire.ENoop, wire.EUpgrade:
	default: // an open packet from a client
		ss.srv.report(KindBadPacket, errors.New("open packet from client"))
		ss.close("parse error", true)
		return false
	}
	return true
}

func (ss *Session) isClosed() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.closed
}

// poll answers a long-polling GET: at once with what is queued, or when
// something is, or with a noop once the session has moved to WebSocket.
func (ss *Session) poll(w http.ResponseWriter, r *http.Request) {
	ss.mu.Lock()
	switch {
	case ss.upgraded:
		ss.mu.Unlock()
		ss.srv.fail(w, KindBadRequest, codeBadRequest, "Bad request")
		return
	case ss.pending != nil:
		ss.mu.Unlock()
		ss.srv.fail(w, KindDuplicatePoll, codeBadRequest, "Bad request")
		ss.close("duplicate poll", true)
		return
	case ss.closed && ss.byClient:
		// The one poll that crossed the client's own close (sent on
		// another request) ends like one held at the close.
		ss.byClient = false
		ss.mu.Unlock()
		writePayload(w, [][]byte{noopPacket})
		return
	case ss.closed:
		ss.mu.Unlock()
		ss.srv.fail(w, KindUnknownSID, codeUnknownSID, "Session ID unknown")
		return
	}
	if len(ss.queue) == 0 {
		// A poll is held up to a ping interval (the ping ends it): past the
		// HTTP server's request deadlines.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Now().Add(ss.srv.o.PingInterval + ss.srv.o.PingTimeout + writeTimeout))
		wake := make(chan struct{})
		ss.pending = wake
		probe := ss.probe != nil
		ss.mu.Unlock()
		// During a probe, a held poll ends with a noop within probeNoop
		// (the client then sends the upgrade packet).
		var probeTick <-chan time.Time
		if probe {
			t := time.NewTimer(probeNoop)
			defer t.Stop()
			probeTick = t.C
		}
		select {
		case <-wake:
		case <-probeTick:
		case <-r.Context().Done():
			ss.mu.Lock()
			if ss.pending == wake {
				ss.pending = nil
			}
			ss.mu.Unlock()
			return
		}
		ss.mu.Lock()
	}
	if ss.upgraded { // the upgrade completed while the poll was held
		ss.mu.Unlock()
		ss.srv.fail(w, KindBadRequest, codeBadRequest, "Bad request")
		return
	}
	q := ss.takeLocked()
	ss.mu.Unlock()
	if len(q) == 0 { // woken by a probe or a close the client asked for
		writePayload(w, [][]byte{noopPacket})
		return
	}
	packets := make([][]byte, len(q))
	for i := range q {
		packets[i] = q[i].text()
	}
	writePayload(w, packets)
}

// post reads a polling POST's payload and runs its packets.
func (ss *Session) post(w http.ResponseWriter, r *http.Request) {
	max := ss.srv.o.MaxPayload
	if r.ContentLength > int64(max) {
		ss.tooLarge(w)
		return
	}
	ss.mu.Lock()
	switch {
	case ss.upgraded:
		ss.mu.Unlock()
		ss.srv.fail(w, KindBadRequest, codeBadRequest, "Bad request")
		return
	case ss.posting:
		ss.mu.Unlock()
		ss.srv.fail(w, KindOverlapPost, codeBadRequest, "Bad request")
		ss.close("overlapping post", true)
		return
	case ss.closed:
		ss.mu.Unlock()
		ss.srv.fail(w, KindUnknownSID, codeUnknownSID, "Session ID unknown")
		return
	}
	ss.posting = true
	ss.mu.Unlock()
	defer func() {
		ss.mu.Lock()
		ss.posting = false
		ss.mu.Unlock()
	}()
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(max)+1))
	if err != nil {
		ss.srv.fail(w, KindBadRequest, codeBadRequest, "Bad request")
		ss.close("transport error", true)
		return
	}
	if len(body) > max {
		ss.tooLarge(w)
		return
	}
	err = wire.ParsePayload(body, max, func(p wire.EPacket) error {
		if !ss.handle(p) {
			return errEnded
		}
		return nil
	})
	switch {
	case err == nil, errors.Is(err, errEnded):
	default:
		ss.srv.fail(w, KindBadPacket, codeBadRequest, "Bad request")
		ss.close("parse error", true)
		return
	}
	w.Header().Set("Content-Type", "text/html")
	_, _ = io.WriteString(w, "ok")
}

var errEnded = errors.New("session ended")

func (ss *Session) tooLarge(w http.ResponseWriter) {
	ss.srv.report(KindTooLarge, errors.New("polling payload over maxPayload"))
	writeError(w, http.StatusRequestEntityTooLarge, codeBadRequest, "Payload too large")
	ss.close("payload too large", true)
}

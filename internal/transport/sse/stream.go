package sse

import (
	"bytes"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"syscall"

	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/netpoll"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/rawio"
	"github.com/herald-rt/herald/internal/transport"
)

// encode is the SSE wire's hub.Encoder: a publication as an event named
// after its event (none: EventSource's "message"), a join or leave notice
// as herald/join or herald/leave, the data being the native protocol's
// JSON document, as a /ws client receives it. The JSON is written in place
// after "data: "; only a document with a line break in it (raw JSON
// whitespace a publisher sent) is written again, split into data lines.
func encode(m *hub.Message) []byte {
	name := m.Pub.Event
	if m.Notice != nil {
		name = ControlEvent(m.Notice.Type)
	}
	b := make([]byte, 0, m.SizeHint()+len(name)+24)
	if name != "" && name != EventMessage {
		b = append(b, "event: "...)
		b = append(b, name...)
		b = append(b, '\n')
	}
	b = append(b, "data: "...)
	start := len(b)
	b = m.AppendJSON(b)
	if bytes.IndexAny(b[start:], "\r\n") >= 0 {
		doc := bytes.Clone(b[start:])
		return AppendEvent(b[:0], name, doc)
	}
	return append(b, '\n', '\n')
}

// hubTransport is the hub.Transport of every stream: a comment line as
// keepalive, a herald/close event as close (nothing awaited: the peer
// never answers; EventSource reconnects when the response ends).
type hubTransport struct{}

func (hubTransport) Ping() []byte { return Heartbeat }

func (hubTransport) Close(code int, reason string) ([]byte, bool) {
	return closeEvent(code, reason), false
}

// closeEvent is the herald/close event: {"type":"close","code","reason"},
// the code a WebSocket client would have been closed with.
func closeEvent(code int, reason string) []byte {
	doc := append([]byte(`{"type":"close","code":`), strconv.Itoa(code)...)
	doc = append(doc, `,"reason":`...)
	doc = protocol.AppendString(doc, reason)
	doc = append(doc, '}')
	return AppendEvent(make([]byte, 0, len(doc)+32), ControlEvent("close"), doc)
}

// stream is one open event stream: its session, the positions its event
// ids report (the hub.PerClient of its client) and the watch on its
// socket, which only learns that the peer is gone.
type stream struct {
	t    *Transport
	sess transport.Session
	c    *hub.Client
	nc   net.Conn

	mu     sync.Mutex // cursor and slab; taken under the client's lock in Wrap
	cursor *Cursor
	slab   []byte // where id lines are carved from: one allocation for many
	// unvouched marks the channels whose recovery was not possible as
	// asked (history not allowed to the client): their subscribed event
	// says recovered:false whatever the session found.
	unvouched []bool

	cmdMu sync.Mutex // POSTed commands run one at a time in the session

	poll     netpoll.Watch
	inMu     sync.Mutex
	received int // bytes the client sent on the stream
}

// slabSize is how many bytes of id lines one allocation holds.
const slabSize = 512

// Wrap implements hub.PerClient: a publication with an offset on one of the
// stream's channels moves that channel's position, and the event carries
// the id of every position. Called with the client's lock held, in queue
// order.
func (st *stream) Wrap(m *hub.Message, shared []byte) (before, body, after []byte) {
	if m.Notice != nil || m.Pub.Offset == 0 {
		return nil, shared, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	i := st.cursor.Index(m.Pub.Channel)
	if i < 0 || !st.cursor.Advance(i, m.Pub.Offset) {
		return nil, shared, nil
	}
	return st.idLocked(), shared, nil
}

// idLocked renders the id line of the current positions into the slab.
// st.mu must be held.
func (st *stream) idLocked() []byte {
	if n := st.cursor.IDSize(); cap(st.slab)-len(st.slab) < n {
		st.slab = make([]byte, 0, max(slabSize, n))
	}
	start := len(st.slab)
	st.slab = st.cursor.AppendID(st.slab)
	return st.slab[start:len(st.slab):len(st.slab)]
}

// out is where a stream's session answers: its own events, framed as
// herald/<type> control events.
type out struct{ st *stream }

// Buffer implements transport.Out.
func (out) Buffer(n int) []byte { return make([]byte, 0, n) }

// Reply implements transport.Out.
func (o out) Reply(doc []byte) { o.st.c.Send(controlFrame(doc)) }

// Burst implements transport.Out.
func (o out) Burst(doc []byte) bool { return o.st.c.SendBurst(controlFrame(doc), nil) }

// Subscribed implements transport.Out: the channel's position becomes the
// one the replay starts from (the subscribe's since when recovered) or,
// without replay, the stream's current position; the subscribed event
// carries the id, and each replayed publication moves it on (Wrap).
func (o out) Subscribed(doc []byte, sub transport.Subscription, replay []*hub.Message) bool {
	st := o.st
	st.mu.Lock()
	i := st.cursor.Index(sub.Channel)
	var id []byte
	if i >= 0 {
		pos := Position{Offset: sub.Position.Offset, Epoch: sub.Position.Epoch}
		if len(replay) > 0 && replay[0].Pub.Offset > 0 {
			pos.Offset = replay[0].Pub.Offset - 1
		}
		st.cursor.Set(i, pos)
		id = st.idLocked()
		if st.unvouched[i] {
			no := false
			doc = protocol.AppendSubscribed(make([]byte, 0, len(doc)+24), sub.Channel, sub.Position, &no, nil)
		}
	}
	st.mu.Unlock()
	ev := make([]byte, 0, len(id)+len(doc)+40)
	ev = append(ev, id...)
	return st.c.SendBurst(appendControl(ev, doc), replay)
}

// controlFrame frames a document of the session's (any but a publication)
// as the event herald/<its type>.
func controlFrame(doc []byte) []byte {
	return appendControl(make([]byte, 0, len(doc)+40), doc)
}

func appendControl(b, doc []byte) []byte {
	return AppendEvent(b, ControlEvent(docType(doc)), doc)
}

// docType returns the "type" of a native document, which the protocol's
// encoders always write first; "message" when it has none.
func docType(doc []byte) string {
	const lead = `{"type":"`
	if !bytes.HasPrefix(doc, []byte(lead)) {
		return EventMessage
	}
	rest := doc[len(lead):]
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || end > 32 {
		return EventMessage
	}
	return string(rest[:end])
}

// retryLine tells EventSource how long to wait before it reconnects: 1 to
// 3 s, drawn per stream, so the clients of a node that goes away do not all
// come back in the same instant.
func retryLine() []byte {
	return AppendRetry(nil, 1000+rand.Int64N(2000))
}

// watch learns when the peer closes the stream: the socket turns readable
// with EOF. A client sends nothing on a stream; what it sends anyway is
// read and dropped.
func (st *stream) watch() {
	sc, ok := st.nc.(syscall.Conn)
	if !ok {
		st.c.Gone(0)
		return
	}
	if err := st.poll.Start(st.t.host.Poller(), sc, st.onReadable); err != nil {
		st.t.host.Sparse().Warn("cannot watch event stream", "err", err)
		st.c.Gone(0)
	}
}

// maxInbound is how much a client may send on a stream (it should send
// nothing) before the stream is ended.
const maxInbound = 4096

func (st *stream) onReadable(d *netpoll.Desc) {
	var buf [512]byte
	var n int
	var err error
	if rc := st.c.RawConn(); rc != nil {
		var r rawio.Reader
		r.Reset(rc)
		n, err = r.Read(buf[:])
	} else {
		n, err = st.nc.Read(buf[:])
	}
	if err != nil || n == 0 {
		st.c.Gone(0)
		return
	}
	if st.inbound(n) > maxInbound {
		st.t.host.Sparse().Info("event stream client sent data; stream ended", "client", st.c.ID)
		st.c.Gone(0)
		return
	}
	if err := st.poll.Resume(d); err != nil {
		st.c.Gone(0)
	}
}

// inbound counts bytes a client sent on its stream.
func (st *stream) inbound(n int) int {
	st.inMu.Lock()
	defer st.inMu.Unlock()
	st.received += n
	return st.received
}

// gone is the client's OnGone: stop watching, forget the stream.
func (st *stream) gone() {
	st.poll.Stop()
	st.t.forget(st)
}

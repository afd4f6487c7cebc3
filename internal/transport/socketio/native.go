package socketio

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport/socketio/wire"
)

// nativeFrame is a herald frame as a Socket.IO socket needs it.
type nativeFrame struct {
	Type         string            `json:"type"`
	Channel      string            `json:"channel"`
	Data         json.RawMessage   `json:"data"`
	Event        string            `json:"event"`
	From         string            `json:"from"`
	Timestamp    time.Time         `json:"timestamp"`
	Offset       uint64            `json:"offset"`
	Epoch        string            `json:"epoch"`
	Recovered    *bool             `json:"recovered"`
	Duplicate    bool              `json:"duplicate"`
	Publications []json.RawMessage `json:"publications"`
	Truncated    bool              `json:"truncated"`
	Code         string            `json:"code"`
	Message      string            `json:"message"`
	ID           json.RawMessage   `json:"id"`
}

// WriteNative takes one frame herald's session wrote for this socket (a
// native JSON frame: a reply, a publication, a join or leave) and sends its
// Socket.IO form. It may be called from any goroutine; frames are sent in
// the order of the calls.
func (c *Conn) WriteNative(frame []byte) { c.writeNative(frame, false) }

// writeNative is WriteNative; burst queues what it sends exempt from the
// client's queue bound (a history answer, bounded by the session).
func (c *Conn) writeNative(frame []byte, burst bool) {
	var f nativeFrame
	if err := decodeNative(frame, &f); err != nil {
		c.srv.report(KindBadPacket, errNotNative)
		return
	}
	c.mu.Lock()
	if c.closed || c.retry {
		c.mu.Unlock()
		return
	}
	if c.hold > 0 {
		if k := c.callOf(&f); k == nil || k.kind != callRecover {
			c.held = append(c.held, frame)
			c.mu.Unlock()
			return
		}
	}
	c.burst = burst
	c.handleLocked(&f)
	c.burst = false
	retry := c.takeRetryLocked()
	c.mu.Unlock()
	if retry != "" {
		c.closeForRetry(retry)
	}
}

// collectNative handles a subscribe's answer and returns what it sends,
// as records, instead of sending it: the first bytes of the burst that
// carries the subscribe's replay.
func (c *Conn) collectNative(frame []byte) []byte {
	var f nativeFrame
	if err := decodeNative(frame, &f); err != nil {
		c.srv.report(KindBadPacket, errNotNative)
		return nil
	}
	first := make([]byte, 0, 256) // an ack and the rooms event
	c.mu.Lock()
	if c.closed || c.retry {
		c.mu.Unlock()
		return nil
	}
	c.collect = &first
	c.handleLocked(&f)
	c.collect = nil
	retry := c.takeRetryLocked()
	c.mu.Unlock()
	if retry != "" {
		c.closeForRetry(retry)
	}
	if len(first) == 0 {
		return nil
	}
	return first
}

// Deliver sends one publication: shared is AppendDelivery's encoding
// (the same bytes for every socket), m the publication it encodes.
func (c *Conn) Deliver(shared []byte, m *protocol.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.retry {
		return
	}
	if c.hold > 0 {
		c.held = append(c.held, AppendNativeMessage(m))
		return
	}
	c.deliverLocked(shared, m)
}

// AppendNativeMessage is m as herald's native message frame.
func AppendNativeMessage(m *protocol.Message) []byte {
	return protocol.AppendMessage(nil, m)
}

func (c *Conn) callOf(f *nativeFrame) *call {
	if len(f.ID) == 0 {
		return nil
	}
	id, err := strconv.ParseUint(string(f.ID), 10, 64)
	if err != nil {
		return nil
	}
	return c.calls.get(id)
}

func (c *Conn) handleLocked(f *nativeFrame) {
	switch f.Type {
	case protocol.TypeMessage:
		m := protocol.Message{Channel: f.Channel, Data: f.Data, Time: f.Timestamp, From: f.From, Offset: f.Offset, Event: f.Event}
		c.deliverLocked(AppendDelivery(nil, &m), &m)
		return
	case protocol.TypeJoin, protocol.TypeLeave:
		return // presence notices are not forwarded to Socket.IO sockets
	case protocol.TypeConnected, protocol.TypePong:
		return
	}
	k := c.callOf(f)
	if k == nil {
		if f.Type == protocol.TypeError {
			c.send(wire.AppendEvent([]byte{byte(wire.EMessage)}, "/", -1, EvError, errorArg(f.Channel, f.Code, f.Message)))
		}
		return
	}
	id, _ := strconv.ParseUint(string(f.ID), 10, 64)
	c.calls.remove(id)
	if f.Type == protocol.TypeError {
		c.failedLocked(k, f)
		return
	}
	switch k.kind {
	case callSubscribe, callRefilter, callRecover:
		c.subscribedLocked(k, f)
	case callUnsubscribe:
		c.posMu.Lock()
		c.rooms.remove(k.channel)
		c.last = lastRoom{}
		c.posMu.Unlock()
		if k.ack >= 0 {
			b := append([]byte(`{"ok":true,"channel":`), wire.AppendJSONString(nil, k.channel)...)
			c.sendAck(k.ack, append(b, '}'))
		}
		c.roomsEventLocked()
	case callPublish:
		if k.ack >= 0 {
			b := append([]byte(`{"ok":true,"channel":`), wire.AppendJSONString(nil, f.Channel)...)
			b = appendPos(b, f.Offset, f.Epoch)
			if f.Duplicate {
				b = append(b, `,"duplicate":true`...)
			}
			c.sendAck(k.ack, append(b, '}'))
		}
	case callHistory:
		g := k.group
		for _, p := range f.Publications {
			e := append([]byte(`{"channel":`), wire.AppendJSONString(nil, f.Channel)...)
			if p = bytes.TrimSpace(p); len(p) > 2 {
				e = append(append(e, ','), p[1:]...)
			} else {
				e = append(e, '}')
			}
			g.pubs = append(g.pubs, e)
		}
		g.truncated = g.truncated || f.Truncated
		c.groupDoneLocked(g)
	}
}

func appendPos(b []byte, offset uint64, epoch string) []byte {
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, offset, 10)
	b = append(b, `,"epoch":`...)
	return wire.AppendJSONString(b, epoch)
}

// subscribedLocked records a room and answers the subscribe.
func (c *Conn) subscribedLocked(k *call, f *nativeFrame) {
	c.posMu.Lock()
	pos := c.rooms.get(k.channel)
	if pos == nil {
		pos = &position{}
		c.rooms.add(k.channel, pos)
		c.last = lastRoom{}
	}
	pos.epoch, pos.offset = f.Epoch, f.Offset
	if k.since != nil && f.Recovered != nil && *f.Recovered {
		// The replay follows this reply: the socket is where it said it
		// was until the replay's events move it on.
		pos.offset = *k.since
	}
	c.posMu.Unlock()
	switch k.kind {
	case callRecover:
		if f.Recovered == nil || !*f.Recovered {
			c.lost = true
		}
		c.joined = true
		c.recoveredOneLocked()
		return
	case callRefilter:
		return
	}
	if k.ack >= 0 {
		b := append(make([]byte, 0, 96+len(k.channel)+len(f.Epoch)), `{"ok":true,"channel":`...)
		b = wire.AppendJSONString(b, k.channel)
		b = appendPos(b, f.Offset, f.Epoch)
		if f.Recovered != nil {
			b = append(b, `,"recovered":`...)
			b = strconv.AppendBool(b, *f.Recovered)
		}
		c.sendAck(k.ack, append(b, '}'))
	}
	c.roomsEventLocked()
}

// failedLocked answers a command herald refused.
func (c *Conn) failedLocked(k *call, f *nativeFrame) {
	switch k.kind {
	case callRecover:
		if f.Code == string(protocol.CodeUnavailable) && !c.joined && (c.down || c.srv.brokerDown()) {
			// The broker was not serving (Redis not reached, or not yet
			// verified by this node, as just after it started): the
			// history may well be there. Nothing has been sent since the
			// CONNECT (no room joined yet), so the connection ends without
			// an answer to it, and socket.io-client reconnects with the
			// same pid and offset and asks again (see closeForRetry).
			// Once a room has joined, its replay may be on its way: ending
			// the connection then would have the client emit it after its
			// next CONNECT and again in that CONNECT's replay; and a
			// refusal while the broker serves is the channel's own, which
			// asking again would not change. Either counts as not
			// recovered, as any other refusal.
			c.retry, c.retryCh = true, k.channel
			return
		}
		c.posMu.Lock()
		c.rooms.remove(k.channel)
		c.last = lastRoom{}
		c.posMu.Unlock()
		c.lost = true
		c.recoveredOneLocked()
	case callRefilter:
		c.send(wire.AppendEvent([]byte{byte(wire.EMessage)}, "/", -1, EvError, errorArg(k.channel, f.Code, f.Message)))
	case callHistory:
		if k.group.failed == nil {
			k.group.failed = errorArg(k.channel, f.Code, f.Message)
		}
		c.groupDoneLocked(k.group)
	default:
		c.refuseLocked(k.ack, k.channel, f.Code, f.Message)
	}
}

// takeRetryLocked returns the room whose recovery is to be retried, once:
// the caller closes the connection (closeForRetry) after unlocking c.mu.
func (c *Conn) takeRetryLocked() string {
	room := c.retryCh
	c.retryCh = ""
	return room
}

// closeForRetry ends a socket whose recovery the broker could not serve
// for now (see failedLocked): its connection closes without a DISCONNECT
// packet and without an answer to its CONNECT, as a lost connection, so
// socket.io-client keeps its pid and offset, reconnects by itself and asks
// again. c.mu must not be held: the close runs the transport's close, which
// ends in OnClose.
func (c *Conn) closeForRetry(room string) {
	c.srv.recoveryRetried(room)
	if hc := c.hc.Load(); hc != nil {
		hc.Close(protocol.CloseResubscribe, "recovery unavailable for now; reconnect")
		return
	}
	c.Close("recovery unavailable")
}

func (c *Conn) refuseLocked(ack int64, channel, code, msg string) { c.refuse(ack, channel, code, msg) }

// groupDoneLocked answers a request:history once every room has replied.
func (c *Conn) groupDoneLocked(g *group) {
	if g.left--; g.left > 0 || g.ack < 0 {
		return
	}
	if g.failed != nil {
		c.sendAck(g.ack, g.failed)
		return
	}
	b := []byte(`{"ok":true,"publications":[`)
	b = append(b, bytes.Join(g.pubs, []byte{','})...)
	b = append(b, ']')
	if g.truncated {
		b = append(b, `,"truncated":true`...)
	}
	c.sendAck(g.ack, append(b, '}'))
}

// recoveredOneLocked counts one recovered room; after the last, the CONNECT
// answer goes out — with the pid the client had when every room
// recovered, a new one (so socket.recovered is false) when one did not —
// followed by what herald sent meanwhile.
func (c *Conn) recoveredOneLocked() {
	if c.hold--; c.hold > 0 {
		return
	}
	if c.lost {
		c.pid = randomID()
	}
	c.send(c.connectAnswer(c.sid))
	c.connSent = true
	held := c.held
	c.held = nil
	for _, frame := range held {
		var f nativeFrame
		if decodeNative(frame, &f) == nil {
			c.handleLocked(&f)
		}
	}
	c.roomsEventLocked()
}

// connectAnswer is the CONNECT answer of "/": sid, and pid with recovery.
func (c *Conn) connectAnswer(sid string) []byte {
	b := wire.AppendSPacketHead(append(make([]byte, 0, 64), byte(wire.EMessage)), wire.SConnect, 0, "/", -1)
	b = append(b, `{"sid":`...)
	b = wire.AppendJSONString(b, sid)
	if c.pid != "" {
		b = append(b, `,"pid":`...)
		b = wire.AppendJSONString(b, c.pid)
	}
	return append(b, '}')
}

// deliverLocked sends a publication with this socket's tail.
func (c *Conn) deliverLocked(shared []byte, m *protocol.Message) {
	c.posMu.Lock()
	if pos := c.roomLocked(m.Channel); pos != nil && m.Offset > pos.offset {
		pos.offset = m.Offset
	}
	wants := c.filter.wants(m.Event)
	tail := c.tailPosLocked()
	c.posMu.Unlock()
	switch {
	case !wants:
	case c.direct != nil:
		c.send(append(append(make([]byte, 0, len(shared)+len(tail)), shared...), tail...))
	default:
		_ = c.ess.Send(shared, tail)
	}
}

// tailPosLocked is what follows a delivery's shared bytes: the recovery
// offset (with recovery on) and the closing bracket. posMu is held.
func (c *Conn) tailPosLocked() []byte {
	if c.pid == "" {
		return closeBracket
	}
	return c.appendTailLocked(make([]byte, 0, 64))
}

// appendTailLocked appends tailPosLocked's bytes to dst. posMu is held.
func (c *Conn) appendTailLocked(dst []byte) []byte {
	if c.pid == "" {
		return append(dst, ']')
	}
	if r := c.last; r.only {
		return appendOneRoomTail(dst, r.ch, r.pos.epoch, r.pos.offset)
	}
	dst = appendRecovery(append(dst, ',', '"'), c.rooms)
	return append(dst, '"', ']')
}

// tailSizeLocked bounds what appendTailLocked appends. posMu is held.
func (c *Conn) tailSizeLocked() int {
	if c.pid == "" {
		return 1
	}
	if r := c.last; r.only {
		return 5 + len(r.ch) + len(r.pos.epoch) + 23
	}
	return 4 + recoverySize(c.rooms)
}

// lastRoom is the room a socket's last delivery was in, with its name,
// and whether it is the socket's only room.
type lastRoom struct {
	ch   string
	pos  *position
	only bool
}

// roomLocked returns the socket's position in channel ch, or nil: the
// room of the last delivery without a lookup (a socket in one room has
// every delivery there). posMu is held.
func (c *Conn) roomLocked(ch string) *position {
	if r := c.last; r.pos != nil && r.ch == ch {
		return r.pos
	}
	pos := c.rooms.get(ch)
	if pos != nil {
		c.last = lastRoom{ch: ch, pos: pos, only: c.rooms.len() == 1}
	}
	return pos
}

var closeBracket = []byte{']'}

// roomsEventLocked emits EvRooms with the socket's rooms and, last, its
// recovery offset (with recovery on).
func (c *Conn) roomsEventLocked() {
	if c.pid == "" || !c.connSent {
		return
	}
	c.posMu.Lock()
	b := make([]byte, 0, 32+recoverySize(c.rooms)+c.tailSizeLocked())
	b = wire.AppendSPacketHead(append(b, byte(wire.EMessage)), wire.SEvent, 0, "/", -1)
	b = append(b, '[')
	b = wire.AppendJSONString(b, EvRooms)
	b = append(b, `,{"rooms":[`...)
	i := 0
	for ch := range c.rooms.all() {
		if i > 0 {
			b = append(b, ',')
		}
		b = wire.AppendJSONString(b, ch)
		i++
	}
	b = append(b, "]}"...)
	b = c.appendTailLocked(b)
	c.posMu.Unlock()
	c.send(b)
}

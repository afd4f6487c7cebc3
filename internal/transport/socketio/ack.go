package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/herald-rt/herald/internal/transport/socketio/wire"
)

// MaxPendingAcks bounds the server-to-client acks a socket may owe at once:
// an emit that would pass it is not sent to that socket, which is reported
// with AckTooManyPending.
const MaxPendingAcks = 64

// Outcomes of an emit to one socket, besides an answer (SocketAck.Code).
const (
	AckTimeout        = "timeout"          // no ACK before the emit's deadline
	AckTooManyPending = "too_many_pending" // the socket already owed MaxPendingAcks
	AckDisconnected   = "disconnected"     // the socket ended (or was not yet connected) before it answered
	AckBinary         = "binary_unsupported"
)

// KindLateAck is the OnError kind of an ACK for an id the server did send,
// but whose emit no longer waits (its deadline passed): dropped, counted.
const KindLateAck = "sio_late_ack"

// reservedEvents are the names socket.io-client keeps for itself (an emit
// of one would never reach a handler), and herald's own.
var reservedEvents = []string{"connect", "connect_error", "disconnect", "disconnecting",
	"newListener", "removeListener", EvError, EvRooms}

// ValidEmitEvent reports whether a server emit may carry event: a name of
// 1 to 256 bytes that neither socket.io-client nor herald reserves.
func ValidEmitEvent(event string) bool {
	return event != "" && len(event) <= 256 && !slices.Contains(reservedEvents, event)
}

// SocketAck is one socket's outcome of an EmitWithAck.
type SocketAck struct {
	// Socket is the socket's id (socket.id in socket.io-client); ClientID
	// its herald client id (as /api/disconnect takes it).
	Socket   string `json:"socket"`
	ClientID string `json:"clientId"`
	// Args are the arguments the client's ack function was called with,
	// as a JSON array, when it answered.
	Args json.RawMessage `json:"args,omitempty"`
	// Code says why there is no answer (AckTimeout, AckTooManyPending,
	// AckDisconnected, AckBinary); empty when Args holds one.
	Code string `json:"code,omitempty"`
}

// ackWaiter gathers the answers of one EmitWithAck. ch has room for one
// answer per socket asked, and a socket answers an emit at most once, so a
// send on it never blocks.
type ackWaiter struct {
	ch chan ackDone
}

type ackDone struct {
	i    int // the socket's index in the emit's results
	args json.RawMessage
	code string
}

// pendingAck is an emit a socket owes an answer to.
type pendingAck struct {
	w *ackWaiter
	i int
}

// emitWithAck sends event with args to the socket with the next ack id, and
// registers w to receive its answer as result i. It returns the id, or 0
// and the reason it sent nothing.
func (c *Conn) emitWithAck(event string, args [][]byte, w *ackWaiter, i int) (uint64, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.runner == nil || !c.connSent {
		return 0, AckDisconnected
	}
	if len(c.acks) >= MaxPendingAcks {
		return 0, AckTooManyPending
	}
	// Ids are 1, 2, … for the Engine.IO session's life: never reused, so an
	// id at most ackNext that is not pending was sent and is no longer
	// awaited, and one above it was never sent.
	c.ackNext++
	if c.acks == nil {
		c.acks = make(map[uint64]pendingAck)
	}
	c.acks[c.ackNext] = pendingAck{w: w, i: i}
	c.send(wire.AppendEvent([]byte{byte(wire.EMessage)}, "/", int64(c.ackNext), event, args...))
	return c.ackNext, ""
}

// cancelAck stops waiting for id's answer; false when it came already.
func (c *Conn) cancelAck(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.acks[id]
	delete(c.acks, id)
	return ok
}

// ack takes an ACK packet from the client: the answer of a pending emit,
// a late one (dropped and counted), or one for an id never sent, which
// ends the session.
func (c *Conn) ack(p wire.SPacket, binary bool) {
	c.mu.Lock()
	pa, ok := c.acks[uint64(p.ID)]
	sent := p.ID > 0 && uint64(p.ID) <= c.ackNext
	if ok && p.ID > 0 {
		delete(c.acks, uint64(p.ID))
		d := ackDone{i: pa.i, args: json.RawMessage(slices.Clone(p.Data))}
		if binary {
			d = ackDone{i: pa.i, code: AckBinary}
		}
		pa.w.ch <- d
	}
	c.mu.Unlock()
	switch {
	case !sent:
		c.protocolError(KindBadAck, errors.New("ACK for an id the server never sent"))
	case !ok:
		c.srv.report(KindLateAck, errors.New("ACK after its emit's deadline"))
	case binary:
		c.srv.report(KindBinary, errors.New("binary attachments are not supported"))
	}
}

// endAcksLocked answers every pending emit with AckDisconnected; c.mu is
// held.
func (c *Conn) endAcksLocked() {
	for id, pa := range c.acks {
		pa.w.ch <- ackDone{i: pa.i, code: AckDisconnected}
		delete(c.acks, id)
	}
}

// socketRef is a socket EmitWithAck asks, with its herald client id.
type socketRef struct {
	c        *Conn
	clientID string
}

// ErrSocketIOOff is EmitWithAck's error when Socket.IO is not served.
var ErrSocketIOOff = errors.New("socket.io is not served (--socketio-path is empty)")

// EmitWithAck emits event to every Socket.IO socket of user connected to
// this node — with data as its one argument, or none when data is empty —
// each with an ack id, and waits until every socket answered, timeout
// passed or ctx is done. It returns one SocketAck per socket (none when
// the user has no socket here). A socket's answer that comes later is
// dropped and counted (KindLateAck). Safe for concurrent use; it parks
// only the caller.
func (t *Transport) EmitWithAck(ctx context.Context, user, event string, data json.RawMessage, timeout time.Duration) ([]SocketAck, error) {
	b := t.bridge.Load()
	if b == nil {
		return nil, ErrSocketIOOff
	}
	var refs []socketRef
	for _, hc := range b.host.Hub().UserClients(user) {
		if c, ok := hc.PerClient().(*Conn); ok {
			refs = append(refs, socketRef{c: c, clientID: hc.ID})
		}
	}
	res := make([]SocketAck, len(refs))
	ids := make([]uint64, len(refs))
	w := &ackWaiter{ch: make(chan ackDone, len(refs))}
	var args [][]byte
	if len(data) > 0 {
		args = [][]byte{data}
	}
	waiting := 0
	for i, r := range refs {
		res[i] = SocketAck{Socket: r.c.socketID(), ClientID: r.clientID}
		id, code := r.c.emitWithAck(event, args, w, i)
		if id == 0 {
			res[i].Code = code
			continue
		}
		ids[i] = id
		waiting++
	}
	take := func(d ackDone) {
		res[d.i].Args, res[d.i].Code = d.args, d.code
		ids[d.i] = 0
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
wait:
	for ; waiting > 0; waiting-- {
		select {
		case d := <-w.ch:
			take(d)
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for i, id := range ids {
		if id != 0 && refs[i].c.cancelAck(id) {
			res[i].Code = AckTimeout
			ids[i] = 0
		}
	}
	// Answers that came while the deadline was being applied: each was
	// sent on ch before its socket's cancelAck returned.
	for {
		select {
		case d := <-w.ch:
			take(d)
		default:
			b.count(res)
			return res, nil
		}
	}
}

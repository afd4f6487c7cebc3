package socketio

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport/socketio/wire"
)

// Built-in events a socket may emit (see docs/socketio.md).
const (
	EvJoinAnalytics    = "join:analytics"
	EvLeaveAnalytics   = "leave:analytics"
	EvSubscribe        = "subscribe"
	EvUnsubscribe      = "unsubscribe"
	EvSubscribeEvents  = "subscribe:events"
	EvUnsubscribeEvent = "unsubscribe:events"
	EvRequestHistory   = "request:history"
	EvPublish          = "publish"
	// EvError is emitted for a failed command that asked no ack.
	EvError = "herald:error"
	// EvRooms is emitted after the socket's rooms change; its last
	// argument is the recovery offset, so a socket that reconnects before
	// any publication reached it still restores its rooms.
	EvRooms = "herald:rooms"
)

type callKind uint8

const (
	callSubscribe callKind = iota
	callUnsubscribe
	callPublish
	callHistory
	callRecover
	callRefilter // a room subscribed again with the socket's new filter
)

// call is one native command in flight, keyed by the id it was sent with.
type call struct {
	kind    callKind
	ack     int64 // the Socket.IO ack id to answer, -1 for none
	channel string
	since   *uint64 // the offset a subscribe with since resumes from
	group   *group  // history of several rooms: answered once all replied
}

// group gathers the replies of one request:history over several rooms.
type group struct {
	ack       int64
	left      int
	pubs      [][]byte
	truncated bool
	failed    []byte // the first error's {code,message}
}

// eventFilter is the socket-wide event-type filter of subscribe:events /
// unsubscribe:events: when allow is nil, every event but those in deny;
// else only those in allow (none, when it is empty). The zero value passes
// everything.
type eventFilter struct {
	allow []string
	deny  []string
}

func (f *eventFilter) wants(ev string) bool {
	if ev == "" {
		ev = DefaultEvent
	}
	if f.allow != nil {
		return slices.Contains(f.allow, ev)
	}
	return !slices.Contains(f.deny, ev)
}

// native is the filter as a native subscribe's "events", when it is a
// non-empty allow-list (herald's hub applies it); the socket applies the
// others itself as it delivers.
func (f *eventFilter) native() []string {
	if len(f.allow) == 0 {
		return nil
	}
	return f.allow
}

// add lets evs through: from "everything" it narrows to exactly evs (the
// seed's subscribe:events ['message','sentiment']); else it widens.
func (f *eventFilter) add(evs []string) {
	switch {
	case f.allow == nil && len(f.deny) == 0:
		f.allow = slices.Clone(evs)
	case f.allow == nil:
		f.deny = slices.DeleteFunc(f.deny, func(e string) bool { return slices.Contains(evs, e) })
	default:
		for _, e := range evs {
			if !slices.Contains(f.allow, e) {
				f.allow = append(f.allow, e)
			}
		}
	}
}

// remove stops evs.
func (f *eventFilter) remove(evs []string) {
	if f.allow != nil {
		f.allow = slices.DeleteFunc(f.allow, func(e string) bool { return slices.Contains(evs, e) })
		return
	}
	for _, e := range evs {
		if !slices.Contains(f.deny, e) {
			f.deny = append(f.deny, e)
		}
	}
}

// filterNative is the event filter as a native subscribe takes it.
func (c *Conn) filterNative() []string {
	c.posMu.Lock()
	defer c.posMu.Unlock()
	return c.filter.native()
}

// newCall registers a native command in flight; c.mu is held.
func (c *Conn) newCall(k *call) []byte {
	c.nextID++
	c.calls.put(c.nextID, k)
	return strconv.AppendUint(nil, c.nextID, 10)
}

// callTable is the native commands in flight, by id: most sockets have
// one at a time (a subscribe), which it keeps without a map. The zero
// value is empty.
type callTable struct {
	id   uint64
	one  *call            // the call with id, or nil
	more map[uint64]*call // the others; nil when none
}

func (t *callTable) put(id uint64, k *call) {
	if t.one == nil {
		t.id, t.one = id, k
		return
	}
	if t.more == nil {
		t.more = make(map[uint64]*call, 1)
	}
	t.more[id] = k
}

func (t *callTable) get(id uint64) *call {
	if t.one != nil && t.id == id {
		return t.one
	}
	return t.more[id]
}

// remove drops call id; an idle socket keeps no table of calls.
func (t *callTable) remove(id uint64) {
	if t.one != nil && t.id == id {
		t.id, t.one = 0, nil
		return
	}
	if delete(t.more, id); len(t.more) == 0 {
		t.more = nil
	}
}

type sinceArg struct {
	Offset *uint64 `json:"offset,omitempty"`
	Epoch  string  `json:"epoch,omitempty"`
	Time   string  `json:"time,omitempty"`
}

type nativeCmd struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel,omitempty"`
	Event   string          `json:"event,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Events  []string        `json:"events,omitempty"`
	Since   *sinceArg       `json:"since,omitempty"`
	Limit   int             `json:"limit,omitempty"`
	IdemKey string          `json:"idempotencyKey,omitempty"`
	ID      json.RawMessage `json:"id"`
}

func encodeCmd(c nativeCmd) []byte {
	b, _ := json.Marshal(c) // strings and raw JSON only
	return b
}

func subscribeCmd(id []byte, channel string, events []string, since *sinceArg) []byte {
	if len(events) > 0 || since != nil {
		return encodeCmd(nativeCmd{Type: protocol.TypeSubscribe, Channel: channel, Events: events, Since: since, ID: id})
	}
	// The common one, without reflection.
	b := make([]byte, 0, len(`{"type":"subscribe","channel":"","id":}`)+len(channel)+len(id)+8)
	b = append(b, `{"type":"subscribe","channel":`...)
	b = wire.AppendJSONString(b, channel)
	b = append(b, `,"id":`...)
	b = append(b, id...)
	return append(b, '}')
}

// arg is the first argument of a built-in event, in the forms it accepts.
type arg struct {
	Channel        string          `json:"channel"`
	Event          string          `json:"event"`
	Data           json.RawMessage `json:"data"`
	Events         []string        `json:"events"`
	Since          json.RawMessage `json:"since"`
	Limit          int             `json:"limit"`
	IdempotencyKey string          `json:"idempotencyKey"`
	Org            json.RawMessage `json:"organizationId"`
}

// decodeArg decodes an event's first argument, an object.
func decodeArg(raw json.RawMessage) (arg, error) {
	var a arg
	err := json.Unmarshal(raw, &a)
	return a, err
}

// scalar reads a JSON string or number as a string.
func scalar(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '{' || raw[0] == '[' {
		return "", false // what encoding/json would refuse, without its error
	}
	if raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), len(raw) > 2
	}
	return scalarJSON(raw)
}

// scalarJSON is scalar with encoding/json.
func scalarJSON(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String(), true
	}
	return "", false
}

// event runs one EVENT of a connected "/" socket.
func (c *Conn) event(p wire.SPacket) {
	name, args, err := wire.EventArgs(p.Data)
	if err != nil {
		c.protocolError(KindBadPacket, err)
		return
	}
	var a arg
	var first json.RawMessage
	if len(args) > 0 {
		first = args[0]
		if bytes.HasPrefix(bytes.TrimSpace(first), []byte("{")) {
			if a, err = decodeArg(first); err != nil {
				c.refuse(p.ID, "", string(protocol.CodeBadRequest), "invalid argument")
				return
			}
		}
	}
	switch name {
	case EvJoinAnalytics, EvLeaveAnalytics:
		org, ok := scalar(first)
		if !ok && a.Org != nil {
			org, ok = scalar(a.Org)
		}
		if !ok {
			c.refuse(p.ID, "", string(protocol.CodeBadRequest), name+" takes an organisation id")
			return
		}
		ch := "org:" + org
		if name == EvJoinAnalytics {
			c.subscribe(p.ID, ch, nil, nil)
		} else {
			c.unsubscribe(p.ID, ch)
		}
	case EvSubscribe, EvUnsubscribe:
		ch := a.Channel
		if s, ok := scalar(first); ok {
			ch = s
		}
		if name == EvUnsubscribe {
			c.unsubscribe(p.ID, ch)
			return
		}
		since, ok := parseSince(a.Since)
		if !ok {
			c.refuse(p.ID, ch, string(protocol.CodeBadRequest), `"since" must be a timestamp (ms or RFC 3339) or {offset, epoch}`)
			return
		}
		c.subscribe(p.ID, ch, a.Events, since)
	case EvSubscribeEvents, EvUnsubscribeEvent:
		evs := a.Events
		if first != nil && evs == nil {
			if json.Unmarshal(first, &evs) != nil {
				var one string
				if json.Unmarshal(first, &one) != nil {
					c.refuse(p.ID, "", string(protocol.CodeBadRequest), name+" takes an array of event names")
					return
				}
				evs = []string{one}
			}
		}
		for _, e := range evs {
			if !protocol.ValidEvent(e) {
				c.refuse(p.ID, "", string(protocol.CodeBadRequest), "event names are 1-64 letters, digits or _ - : . @")
				return
			}
		}
		c.refilter(p.ID, name == EvSubscribeEvents, evs)
	case EvRequestHistory:
		since, ok := parseSince(a.Since)
		if !ok {
			c.refuse(p.ID, a.Channel, string(protocol.CodeBadRequest), `"since" must be a timestamp (ms or RFC 3339) or {offset, epoch}`)
			return
		}
		c.history(p.ID, a.Channel, since, a.Limit)
	case EvPublish:
		cmd := nativeCmd{Type: protocol.TypeMessage, Channel: a.Channel, Event: a.Event, Data: a.Data, IdemKey: a.IdempotencyKey}
		c.run(&call{kind: callPublish, ack: p.ID, channel: a.Channel}, func(id []byte) []byte {
			cmd.ID = id
			return encodeCmd(cmd)
		})
	default:
		c.refuse(p.ID, "", "unknown_event", "unknown event "+strconv.Quote(name)+"; see docs/socketio.md")
	}
}

// parseSince reads a since argument: a timestamp in milliseconds, an RFC
// 3339 time, or {offset, epoch}. ok is false when it is none of them.
func parseSince(raw json.RawMessage) (*sinceArg, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	var ms float64
	if json.Unmarshal(raw, &ms) == nil {
		return &sinceArg{Time: time.UnixMilli(int64(ms)).UTC().Format(time.RFC3339Nano)}, true
	}
	var t time.Time
	if json.Unmarshal(raw, &t) == nil {
		return &sinceArg{Time: t.UTC().Format(time.RFC3339Nano)}, true
	}
	var pos struct {
		Offset *uint64 `json:"offset"`
		Epoch  string  `json:"epoch"`
	}
	if json.Unmarshal(raw, &pos) == nil && pos.Offset != nil {
		return &sinceArg{Offset: pos.Offset, Epoch: pos.Epoch}, true
	}
	return nil, false
}

// run registers k and runs the native command mk makes with its id.
func (c *Conn) run(k *call, mk func(id []byte) []byte) {
	c.mu.Lock()
	r := c.runner
	if r == nil {
		c.mu.Unlock()
		return
	}
	cmd := mk(c.newCall(k))
	c.mu.Unlock()
	r.Run(cmd)
}

func (c *Conn) subscribe(ack int64, ch string, events []string, since *sinceArg) {
	k := &call{kind: callSubscribe, ack: ack, channel: ch}
	if since != nil {
		k.since = since.Offset
	}
	c.run(k, func(id []byte) []byte {
		if events == nil {
			events = c.filterNative()
		}
		return subscribeCmd(id, ch, events, since)
	})
}

func (c *Conn) unsubscribe(ack int64, ch string) {
	c.run(&call{kind: callUnsubscribe, ack: ack, channel: ch}, func(id []byte) []byte {
		return encodeCmd(nativeCmd{Type: protocol.TypeUnsubscribe, Channel: ch, ID: id})
	})
}

// refilter changes the socket-wide event filter and subscribes every room
// again with it (an allow-list is applied by herald's hub; a deny-list by
// the socket as it delivers).
func (c *Conn) refilter(ack int64, add bool, evs []string) {
	c.mu.Lock()
	r := c.runner
	if r == nil {
		c.mu.Unlock()
		return
	}
	c.posMu.Lock()
	if add {
		c.filter.add(evs)
	} else {
		c.filter.remove(evs)
	}
	events := c.filter.native()
	rooms := make([]string, 0, c.rooms.len())
	for ch := range c.rooms.all() {
		rooms = append(rooms, ch)
	}
	// The answer says what passes: "events" (a list, or null for every
	// event) and "except".
	reply := []byte(`{"ok":true,"events":`)
	reply, _ = appendJSON(reply, c.filter.allow)
	reply = append(reply, `,"except":`...)
	reply, _ = appendJSON(reply, append([]string{}, c.filter.deny...))
	reply = append(reply, '}')
	c.posMu.Unlock()
	cmds := make([][]byte, 0, len(rooms))
	for _, ch := range rooms {
		cmds = append(cmds, subscribeCmd(c.newCall(&call{kind: callRefilter, ack: -1, channel: ch}), ch, events, nil))
	}
	c.mu.Unlock()
	for _, cmd := range cmds {
		r.Run(cmd)
	}
	if ack >= 0 {
		c.sendAck(ack, reply)
	}
}

func appendJSON(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
}

// history asks for one room's history, or every room's.
func (c *Conn) history(ack int64, ch string, since *sinceArg, limit int) {
	c.mu.Lock()
	r := c.runner
	if r == nil {
		c.mu.Unlock()
		return
	}
	var chans []string
	if ch != "" {
		chans = []string{ch}
	} else {
		c.posMu.Lock()
		for room := range c.rooms.all() {
			chans = append(chans, room)
		}
		c.posMu.Unlock()
		slices.Sort(chans)
	}
	if len(chans) == 0 {
		c.mu.Unlock()
		if ack >= 0 {
			c.sendAck(ack, []byte(`{"ok":true,"publications":[]}`))
		}
		return
	}
	g := &group{ack: ack, left: len(chans)}
	cmds := make([][]byte, len(chans))
	for i, room := range chans {
		id := c.newCall(&call{kind: callHistory, ack: ack, channel: room, group: g})
		cmds[i] = encodeCmd(nativeCmd{Type: protocol.TypeHistory, Channel: room, Since: since, Limit: limit, ID: id})
	}
	c.mu.Unlock()
	for _, cmd := range cmds {
		r.Run(cmd)
	}
}

// sendAck answers ack id with one argument.
func (c *Conn) sendAck(id int64, argJSON []byte) {
	b := wire.AppendSPacketHead(append(make([]byte, 0, 24+len(argJSON)), byte(wire.EMessage)), wire.SAck, 0, "/", id)
	b = append(b, '[')
	b = append(b, argJSON...)
	c.send(append(b, ']'))
}

// errorArg is {"ok":false,"error":{"code","message"},"channel"?}.
func errorArg(channel, code, msg string) []byte {
	b := []byte(`{"ok":false,"error":{"code":`)
	b = wire.AppendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = wire.AppendJSONString(b, msg)
	b = append(b, '}')
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = wire.AppendJSONString(b, channel)
	}
	return append(b, '}')
}

// refuse answers a failed command: through its ack, or else as an
// EvError event.
func (c *Conn) refuse(ack int64, channel, code, msg string) {
	if ack >= 0 {
		c.sendAck(ack, errorArg(channel, code, msg))
		return
	}
	c.send(wire.AppendEvent([]byte{byte(wire.EMessage)}, "/", -1, EvError, errorArg(channel, code, msg)))
}

// errNotNative is returned for frames WriteNative does not understand.
var errNotNative = errors.New("not a herald frame")

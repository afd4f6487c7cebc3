package hub

import (
	"sync"

	"github.com/herald-rt/herald/internal/protocol"
)

// The transport seam.
//
// The hub moves bytes; it does not know how a protocol frames them. What it
// needs to know about a client's protocol comes from three places:
//
//   - its Wire (ClientOptions.Wire): which encoding of shared messages the
//     client is sent. A transport registers each encoding it uses with
//     RegisterWire (the native WebSocket protocol registers two: plain and
//     permessage-deflate frames). A Message is encoded lazily, at most once
//     per wire that one of its recipients uses, never once per recipient.
//   - its Transport (ClientOptions.Transport): the bytes of a keepalive and
//     of a close, and whether a close awaits the peer's answer.
//   - optionally, a PerClient (ClientOptions.PerClient): a few bytes that
//     differ per recipient around the shared ones (an SSE id: line, a
//     Socket.IO offset), written in the same vectored write, or the choice
//     of another shared encoding, or none.
//
// Everything else a transport sends — answers to one client's commands —
// it frames itself and queues with Client.Send or Client.SendBurst.

// MaxWires is how many wires one hub can register.
const MaxWires = 8

// Wire is one encoding of shared messages, as registered with RegisterWire.
// Its zero value is the first wire registered.
type Wire uint8

// Encoder returns the bytes that every client of one wire is sent for m.
// It is called at most once per message and wire, on the first recipient's
// goroutine (a publisher's, or a subscribing session's); it may call
// m.Bytes for another wire (one encoding derived from another, such as a
// compressed frame from the plain one) or m.JSON, never m.Bytes of its own
// wire. The result is shared by every recipient and must not be changed
// afterwards. It must not return nil; it may return the bytes of another
// wire (a compressed wire whose message did not shrink).
type Encoder func(m *Message) []byte

// Transport is what the hub needs from a client's transport besides its
// wire. Implementations are typically stateless and shared by every client
// of the transport; the hub calls them from any goroutine, possibly with the
// client's lock held, so they must not call back into the hub or the client.
type Transport interface {
	// Ping returns the keepalive queued to a client idle for the hub's
	// PingInterval (a WebSocket ping frame, an SSE comment), or nil to send
	// none. The result is queued as it is to every client: it must not
	// change afterwards.
	Ping() []byte
	// Close returns the last bytes written when the client is closed with
	// code (one of protocol's Close codes) and reason — after everything
	// queued before, unless the close drops the queue (a slow consumer) —
	// or nil for none. awaitPeer asks the hub to half-close the socket
	// after them and leave the connection to the reader, which calls
	// Client.Gone when the peer answers (WebSocket's close handshake), for
	// at most a grace period; without it the connection is dropped once
	// they are written.
	Close(code int, reason string) (last []byte, awaitPeer bool)
}

// PerClient decides what one recipient is sent for a shared message. Wrap is
// called with the client's lock held, once per message queued to the
// client and in the order they are queued — so a transport may keep
// per-client state there, such as the positions an SSE id: line reports —
// and must not call the hub or the client. shared is m encoded for the
// client's wire. Wrap returns the body to send — shared itself, or m's
// bytes for another wire (m.Bytes), for a transport whose per-recipient
// bytes are the same for most recipients of a message, which it can then
// encode once (a Socket.IO event with its recovery offset) — and the bytes
// before and after it, nil for none. A nil body skips the message for this
// client (an event its filter refuses). Returned slices are queued as they
// are and must not change afterwards.
type PerClient interface {
	Wrap(m *Message, shared []byte) (before, body, after []byte)
}

// wires is a hub's registered encoders.
type wires struct {
	mu    sync.Mutex
	n     int
	names [MaxWires]string
	enc   [MaxWires]Encoder
}

// RegisterWire adds an encoding of shared messages and returns its Wire.
// Transports register theirs when the server is built, before the hub has
// clients; registering after a message was made panics at that message's
// use, as does registering more than MaxWires. Registering a name again
// returns the Wire it has.
func (h *Hub) RegisterWire(name string, enc Encoder) Wire {
	w := &h.wires
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.n {
		if w.names[i] == name {
			return Wire(i)
		}
	}
	if w.n == MaxWires {
		panic("hub: more than MaxWires wires registered")
	}
	w.names[w.n], w.enc[w.n] = name, enc
	w.n++
	return Wire(w.n - 1)
}

// WireName returns the name w was registered with.
func (h *Hub) WireName(w Wire) string {
	h.wires.mu.Lock()
	defer h.wires.mu.Unlock()
	return h.wires.names[w]
}

// Message is one outgoing message shared by its recipients — a publication
// or a join/leave notice — said once and encoded lazily, at most once per
// wire its recipients use (and once as the native JSON document, when an
// encoder asks for it). Make one with Hub.Publication or Hub.Notice; its
// exported fields must not change once it is queued to anyone.
type Message struct {
	// Pub is the publication, when Notice is nil.
	Pub protocol.Message
	// Notice is the join or leave notice, or nil for a publication.
	Notice *protocol.JoinLeave

	enc   *[MaxWires]Encoder
	json  encoded
	wired [MaxWires]encoded
}

type encoded struct {
	once sync.Once
	b    []byte
}

// Publication returns a message delivering p.
func (h *Hub) Publication(p protocol.Message) *Message {
	return &Message{Pub: p, enc: &h.wires.enc}
}

// Notice returns a message carrying a join or leave notice.
func (h *Hub) Notice(n protocol.JoinLeave) *Message {
	return &Message{Notice: &n, enc: &h.wires.enc}
}

// Bytes returns the message encoded for wire w, encoding it on first use.
func (m *Message) Bytes(w Wire) []byte {
	e := &m.wired[w]
	e.once.Do(func() { e.b = m.enc[w](m) })
	return e.b
}

// JSON returns the message as the native protocol's JSON document (what a
// /ws client receives, unframed), encoding it on first use.
func (m *Message) JSON() []byte {
	m.json.once.Do(func() { m.json.b = m.AppendJSON(make([]byte, 0, m.SizeHint())) })
	return m.json.b
}

// AppendJSON appends the native protocol's JSON document for m to b: for
// encoders that frame it in place (room reserved in front of it).
func (m *Message) AppendJSON(b []byte) []byte {
	if n := m.Notice; n != nil {
		return protocol.AppendJoinLeave(b, n.Type, n.Channel, n.ClientID, n.UserID)
	}
	return protocol.AppendMessage(b, &m.Pub)
}

// SizeHint is about the size of the message's JSON document, for sizing
// buffers (not a bound).
func (m *Message) SizeHint() int {
	if n := m.Notice; n != nil {
		return 96 + len(n.Channel) + len(n.ClientID) + len(n.UserID)
	}
	p := &m.Pub
	return 112 + len(p.Channel) + len(p.Data) + len(p.From) + len(p.Event)
}

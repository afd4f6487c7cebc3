// Package ws is herald's native WebSocket transport: RFC 6455 framing
// (data, ping, pong and close frames, permessage-deflate), the wires it
// registers on the hub, and the hub.Transport of a WebSocket client.
//
// The hub never sees a frame header: it queues the bytes this package
// makes. Other transports that speak WebSocket underneath (Socket.IO over
// WebSocket) use the same framing functions for their own wires.
package ws

import (
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/transport"
)

// Wires are the native protocol's encodings of shared messages: each
// message's JSON document in a text frame, and the same compressed with
// permessage-deflate for clients that negotiated it.
type Wires struct {
	Plain, Deflate hub.Wire
}

// Register registers the native wires on h. Messages whose JSON document
// is shorter than compressMin bytes (or that do not shrink) go to deflate
// clients uncompressed; compressMin 0 never compresses.
func Register(h *hub.Hub, compressMin int) Wires {
	var w Wires
	w.Plain = h.RegisterWire("ws", func(m *hub.Message) []byte {
		return Seal(m.AppendJSON(NewFrameBuffer(m.SizeHint())))
	})
	pool := newDeflaterPool()
	w.Deflate = h.RegisterWire("ws+deflate", func(m *hub.Message) []byte {
		plain := m.Bytes(w.Plain)
		payload := payloadOf(plain)
		if compressMin <= 0 || len(payload) < compressMin {
			return plain
		}
		if f := deflateFrame(payload, pool); f != nil {
			return f
		}
		return plain
	})
	return w
}

// For returns the wire of a client that did (deflate) or did not negotiate
// permessage-deflate.
func (w Wires) For(deflate bool) hub.Wire {
	if deflate {
		return w.Deflate
	}
	return w.Plain
}

// Transport is the hub.Transport of every WebSocket client: a ping frame
// as keepalive, a close frame answered by the peer's (RFC 6455's close
// handshake) as close. The zero value is not usable; make one with
// NewTransport. It is safe for concurrent use.
type Transport struct {
	ping []byte
}

// NewTransport returns the hub.Transport of WebSocket clients.
func NewTransport() *Transport {
	return &Transport{ping: controlFrame(opPing, nil)}
}

// Ping implements hub.Transport.
func (t *Transport) Ping() []byte { return t.ping }

// Close implements hub.Transport: a close frame, and the peer's close
// frame awaited.
func (t *Transport) Close(code int, reason string) ([]byte, bool) {
	return CloseFrame(code, reason), true
}

// Out is the transport.Out of a native WebSocket client: each document in
// one text frame on the client's queue, framed in place (Buffer reserves
// the header's room).
type Out struct{ C *hub.Client }

// Buffer implements transport.Out.
func (Out) Buffer(n int) []byte { return NewFrameBuffer(n) }

// Reply implements transport.Out.
func (o Out) Reply(doc []byte) { o.C.Send(Seal(doc)) }

// Burst implements transport.Out.
func (o Out) Burst(doc []byte) bool { return o.C.SendBurst(Seal(doc), nil) }

// Subscribed implements transport.Out.
func (o Out) Subscribed(doc []byte, _ transport.Subscription, replay []*hub.Message) bool {
	return o.C.SendBurst(Seal(doc), replay)
}

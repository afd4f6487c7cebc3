package hub

import "github.com/herald-rt/herald/internal/protocol"

// The hub's tests use a wire that sends a message's data as it is: what a
// client is sent is then exactly what the test published. The transport
// of their clients is the bare one (no keepalives, nothing at a close).

// rawWires is the encoder table of the tests' messages: wire 0 sends the
// data unframed.
var rawWires = [MaxWires]Encoder{func(m *Message) []byte { return m.Pub.Data }}

// TextFrame is what a client of the raw wire is sent for payload.
func TextFrame(payload []byte) []byte { return payload }

// NewFrameBuffer returns an empty buffer for a payload.
func NewFrameBuffer(capacity int) []byte { return make([]byte, 0, capacity) }

// NewFrame returns a message whose raw-wire bytes are payload.
func NewFrame(payload []byte) *Message {
	return &Message{Pub: protocol.Message{Data: payload}, enc: &rawWires}
}

package hub

import "encoding/binary"

// WebSocket opcodes used by the server (RFC 6455 §5.2).
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// headroom is the space reserved in front of a payload for the largest
// server-to-client frame header (2 + 8 bytes; server frames are unmasked).
const headroom = 10

// NewFrameBuffer returns an empty buffer with room for a frame header in front,
// for use with appending encoders followed by Seal.
func NewFrameBuffer(capacity int) []byte {
	return make([]byte, headroom, headroom+capacity)
}

// Seal turns buf (created by NewFrameBuffer and appended to) into one complete
// final text frame without copying the payload. The result is immutable by
// convention: the same slice is queued to every subscriber.
func Seal(buf []byte) []byte { return sealOp(buf, opText) }

func sealOp(buf []byte, op byte) []byte {
	n := len(buf) - headroom
	var start int
	switch {
	case n <= 125:
		start = headroom - 2
		buf[start+1] = byte(n)
	case n <= 0xFFFF:
		start = headroom - 4
		buf[start+1] = 126
		binary.BigEndian.PutUint16(buf[start+2:], uint16(n))
	default:
		start = 0
		buf[1] = 127
		binary.BigEndian.PutUint64(buf[2:], uint64(n))
	}
	buf[start] = 0x80 | op // FIN + opcode
	return buf[start:]
}

// TextFrame copies payload into a new final text frame.
func TextFrame(payload []byte) []byte {
	b := NewFrameBuffer(len(payload))
	return Seal(append(b, payload...))
}

func controlFrame(op byte, payload []byte) []byte {
	b := NewFrameBuffer(len(payload))
	return sealOp(append(b, payload...), op)
}

// closeFrame builds a close frame with code and a reason cut to fit the
// 125-byte control frame limit.
func closeFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return controlFrame(opClose, append(p, reason...))
}

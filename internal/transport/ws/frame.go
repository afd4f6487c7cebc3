package ws

import (
	"bytes"
	"encoding/binary"
	"sync"

	"github.com/klauspost/compress/flate"
)

// WebSocket opcodes used by the server (RFC 6455 §5.2).
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// Headroom is the space reserved in front of a payload for the largest
// server-to-client frame header (2 + 8 bytes; server frames are unmasked).
const Headroom = 10

// NewFrameBuffer returns an empty buffer with room for a frame header in front,
// for use with appending encoders followed by Seal.
func NewFrameBuffer(capacity int) []byte {
	return make([]byte, Headroom, Headroom+capacity)
}

// Seal turns buf (created by NewFrameBuffer and appended to) into one complete
// final text frame without copying the payload. The result is immutable by
// convention: the same slice may be queued to many clients.
func Seal(buf []byte) []byte { return sealOp(buf, opText) }

func sealOp(buf []byte, op byte) []byte {
	return buf[putHeader((*[Headroom]byte)(buf[:Headroom]), op, len(buf)-Headroom):]
}

// putHeader writes the header of a final frame with opcode op and n payload
// bytes into the end of h and returns where it begins.
func putHeader(h *[Headroom]byte, op byte, n int) int {
	var start int
	switch {
	case n <= 125:
		start = Headroom - 2
		h[start+1] = byte(n)
	case n <= 0xFFFF:
		start = Headroom - 4
		h[start+1] = 126
		binary.BigEndian.PutUint16(h[start+2:], uint16(n))
	default:
		h[1] = 127
		binary.BigEndian.PutUint64(h[2:], uint64(n))
	}
	h[start] = 0x80 | op // FIN + opcode
	return start
}

// TextHeader writes into the end of h the header of a final text frame of
// n payload bytes, as the server sends it (unmasked), and returns the
// header: for a frame whose payload is queued in parts (shared bytes and a
// per-client tail) rather than built in one buffer.
func TextHeader(h *[Headroom]byte, n int) []byte {
	return h[putHeader(h, opText, n):]
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

// PongFrame returns the pong answering a ping with payload.
func PongFrame(payload []byte) []byte { return controlFrame(opPong, payload) }

// CloseFrame builds a close frame with code and a reason cut to fit the
// 125-byte control frame limit.
func CloseFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return controlFrame(opClose, append(p, reason...))
}

// payloadOf returns the payload of a frame made by sealOp.
func payloadOf(frame []byte) []byte {
	switch frame[1] & 0x7f {
	case 126:
		return frame[4:]
	case 127:
		return frame[10:]
	}
	return frame[2:]
}

// deflateFrame compresses payload as one permessage-deflate message with
// no context (valid whatever context takeover was negotiated) and frames it
// with RSV1 set. It returns nil when compression does not make it smaller.
func deflateFrame(payload []byte, pool *sync.Pool) []byte {
	var buf bytes.Buffer
	buf.Grow(Headroom + len(payload)/2)
	buf.Write(make([]byte, Headroom))
	w := pool.Get().(*flate.Writer)
	w.Reset(&buf)
	_, err := w.Write(payload)
	if err == nil {
		err = w.Flush()
	}
	pool.Put(w)
	b := buf.Bytes()
	// A sync flush ends with 00 00 ff ff, which RFC 7692 says to drop.
	if err != nil || len(b) < Headroom+4 || !bytes.HasSuffix(b, []byte{0, 0, 0xff, 0xff}) {
		return nil
	}
	b = b[:len(b)-4]
	if len(b)-Headroom >= len(payload) {
		return nil
	}
	out := sealOp(b, opText)
	out[0] |= 0x40 // RSV1: compressed
	return out
}

func newDeflaterPool() *sync.Pool {
	return &sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.BestSpeed)
		return w
	}}
}

package hub

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

// Frame is a message encoded once for all its recipients: the plain text
// frame, and — made at most once, on first need — a permessage-deflate
// compressed variant for clients that negotiated compression.
type Frame struct {
	plain    []byte
	payload  []byte
	once     sync.Once
	deflated []byte
}

// NewFrame seals buf (from NewFrameBuffer, appended to) into a Frame.
func NewFrame(buf []byte) *Frame {
	return &Frame{plain: Seal(buf), payload: buf[headroom:]}
}

// Plain returns the uncompressed frame.
func (f *Frame) Plain() []byte { return f.plain }

// bytesFor returns the variant to send to c.
func (f *Frame) bytesFor(c *Client) []byte {
	min := c.hub.opts.CompressMin
	if !c.deflate || min <= 0 || len(f.payload) < min {
		return f.plain
	}
	f.once.Do(func() { f.deflated = deflateFrame(f.payload, c.hub.deflaters) })
	if f.deflated == nil {
		return f.plain
	}
	return f.deflated
}

// deflateFrame compresses payload as one permessage-deflate message with
// no context (valid whatever context takeover was negotiated) and frames it
// with RSV1 set. It returns nil when compression does not make it smaller.
func deflateFrame(payload []byte, pool *sync.Pool) []byte {
	var buf bytes.Buffer
	buf.Grow(headroom + len(payload)/2)
	buf.Write(make([]byte, headroom))
	w := pool.Get().(*flate.Writer)
	w.Reset(&buf)
	_, err := w.Write(payload)
	if err == nil {
		err = w.Flush()
	}
	pool.Put(w)
	b := buf.Bytes()
	// A sync flush ends with 00 00 ff ff, which RFC 7692 says to drop.
	if err != nil || len(b) < headroom+4 || !bytes.HasSuffix(b, []byte{0, 0, 0xff, 0xff}) {
		return nil
	}
	b = b[:len(b)-4]
	if len(b)-headroom >= len(payload) {
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

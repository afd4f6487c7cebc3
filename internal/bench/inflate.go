package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

// inflateTail completes a permessage-deflate message for a stock inflater:
// the empty stored block 00 00 ff ff the sender removed (RFC 7692 §7.2.2),
// then an empty final stored block so that the stream ends with io.EOF.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflater decompresses one permessage-deflate message at a time. It is
// stateless between messages (no context takeover was negotiated), so
// connections share a pool of them instead of each holding a decompressor
// (≈ 40 KiB of window and tables) for its whole life; a connection takes one
// only while it reads a compressed frame. After warm-up, inflating allocates
// nothing: the decompressor is Reset, the input and output buffers reused.
type inflater struct {
	in  []byte        // the compressed message + inflateTail
	src bytes.Reader  // over in; a *bytes.Reader takes flate's fast path
	fr  io.ReadCloser // klauspost/compress/flate decompressor
	out []byte
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

var errInflateLimit = errors.New("inflated message too large")

// inflate decompresses the payload of one compressed frame (without its
// trailing 00 00 ff ff) and returns the message, valid until the next call.
// It fails when the message would exceed limit bytes.
func (f *inflater) inflate(p []byte, limit int) ([]byte, error) {
	f.in = append(append(f.in[:0], p...), inflateTail...)
	f.src.Reset(f.in)
	if f.fr == nil {
		f.fr = flate.NewReader(&f.src)
	} else if err := f.fr.(flate.Resetter).Reset(&f.src, nil); err != nil {
		return nil, err
	}
	out := f.out[:0]
	if cap(out) == 0 {
		out = make([]byte, 0, max(4*len(p), 512))
	}
	for {
		if len(out) == cap(out) {
			out = append(out, 0)[:len(out)]
		}
		n, err := f.fr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			f.out = out[:0]
			return nil, fmt.Errorf("%w (over %d bytes)", errInflateLimit, limit)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			f.out = out[:0]
			return nil, err
		}
	}
	f.out = out
	return out, nil
}

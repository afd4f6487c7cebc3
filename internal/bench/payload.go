package bench

import (
	"bytes"
	"strconv"
)

// A publication's data is a JSON object the generator writes itself:
//
//	{"seq":17,"t":1767225600123456789,"pad":"xxxx…"}
//
// seq is the publication's sequence number within its stream (channel), t its
// intended send time in Unix nanoseconds on the fixed schedule, and pad fills
// the object up to the requested payload size. Subscribers find seq and t by
// scanning bytes: no JSON decoding on the receive path.
//
// The default pad is a run of 'x', which deflate shrinks to almost nothing.
// With --compressible the object is filled instead with an "items" array of
// event records that look like application data (repeated keys, a few
// enumerated values, pseudo-random ids, numbers and paths), and a short pad
// of words makes up the exact size; see appendCompressible.
//
//	{"seq":17,"t":1767225600123456789,"items":[{"id":48213,"user":"user-0381",
//	 "event":"page_view","path":"/products/3172","score":0.482,"ok":true,
//	 "tags":["sale","new"]},…],"pad":"lorem ipsum dolor…"}
//
// It is deterministic in seq, and deflates (BestSpeed, no context, as herald
// sends it) to about 40 % of its size at 1 KiB, a third at 2 KiB and a
// quarter at 4 KiB: the ratios of typical JSON, not of a run of one byte.

var (
	seqKey = []byte(`"seq":`)
	tKey   = []byte(`"t":`)
)

// minPayload is the smallest payload size that is always met exactly: the
// data object with an empty pad, for the largest seq and t values the
// generator produces (seq < 10^10, t < 10^19). Smaller sizes give the
// smallest object possible.
const minPayload = len(`{"seq":9999999999,"t":9999999999999999999,"pad":""}`)

const padOverhead = len(`,"pad":""}`)

// appendPayload appends the data object for (seq, t), padded so the object is
// exactly size bytes when size leaves room for the pad field, otherwise as
// small as possible.
func appendPayload(b []byte, seq uint64, t int64, size int) []byte {
	start := len(b)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	n := size - (len(b) - start) - padOverhead
	if n < 0 {
		return append(b, '}')
	}
	b = append(b, `,"pad":"`...)
	for i := 0; i < n; i++ {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// appendPayloadKind is appendPayload, or appendCompressible when
// compressible.
func appendPayloadKind(b []byte, seq uint64, t int64, size int, compressible bool) []byte {
	if compressible {
		return appendCompressible(b, seq, t, size)
	}
	return appendPayload(b, seq, t, size)
}

// Vocabulary of the compressible payload.
var (
	cpEvents = []string{"page_view", "click", "add_to_cart", "checkout", "login", "logout", "search", "scroll"}
	cpPaths  = []string{"/products/", "/cart/", "/search?q=", "/account/orders/", "/blog/", "/help/articles/"}
	cpTags   = []string{"sale", "new", "featured", "mobile", "desktop", "eu", "us", "beta"}
	cpWords  = []string{"lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
		"eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua"}
)

// appendCompressible appends a data object of exactly size bytes (when size
// leaves room for the pad field, otherwise as small as possible) with seq
// and t first, then as many "items" records as fit, then a pad of words.
func appendCompressible(b []byte, seq uint64, t int64, size int) []byte {
	start := len(b)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	if size-(len(b)-start)-padOverhead < 0 {
		return append(b, '}')
	}
	rng := seq*0x9e3779b97f4a7c15 + 0x2545f4914f6cdd1d
	next := func(n uint64) uint64 { // xorshift64*, uniform enough in [0, n)
		rng ^= rng >> 12
		rng ^= rng << 25
		rng ^= rng >> 27
		return (rng * 2685821657736338717 >> 32) % n
	}
	// Items while one more still leaves room for "]" and the pad field.
	items := len(b)
	b = append(b, `,"items":[`...)
	for k := 0; ; k++ {
		mark := len(b)
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = strconv.AppendUint(b, 10000+next(90000), 10)
		b = append(b, `,"user":"user-`...)
		b = appendDigits(b, next(10000), 4)
		b = append(b, `","event":"`...)
		b = append(b, cpEvents[next(uint64(len(cpEvents)))]...)
		b = append(b, `","path":"`...)
		b = append(b, cpPaths[next(uint64(len(cpPaths)))]...)
		b = strconv.AppendUint(b, next(5000), 10)
		b = append(b, `","score":0.`...)
		b = appendDigits(b, next(1000), 3)
		if next(4) == 0 {
			b = append(b, `,"ok":false`...)
		} else {
			b = append(b, `,"ok":true`...)
		}
		b = append(b, `,"tags":["`...)
		b = append(b, cpTags[next(uint64(len(cpTags)))]...)
		b = append(b, `","`...)
		b = append(b, cpTags[next(uint64(len(cpTags)))]...)
		b = append(b, `"]}`...)
		if len(b)-start+len(`]`)+padOverhead > size {
			b = b[:mark]
			if k == 0 {
				b = b[:items] // not even one item fits: no array
			} else {
				b = append(b, ']')
			}
			break
		}
	}
	// The pad: words separated by spaces, the last one cut to fit.
	n := size - (len(b) - start) - padOverhead
	b = append(b, `,"pad":"`...)
	for n > 0 {
		w := cpWords[next(uint64(len(cpWords)))]
		if len(w) >= n {
			b = append(b, w[:n]...)
			break
		}
		b = append(b, w...)
		b = append(b, ' ')
		n -= len(w) + 1
	}
	return append(b, `"}`...)
}

// appendDigits appends v as exactly width decimal digits (v < 10^width).
func appendDigits(b []byte, v uint64, width int) []byte {
	var d [20]byte
	for i := width - 1; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[:width]...)
}

// scanSeqT finds the generator's "seq" and "t" fields in a frame and parses
// them. It never allocates and never panics; ok is false when either is
// missing or malformed.
func scanSeqT(frame []byte) (seq uint64, t int64, ok bool) {
	i := bytes.Index(frame, seqKey)
	if i < 0 {
		return 0, 0, false
	}
	rest := frame[i+len(seqKey):]
	seq, n, ok := parseUint(rest)
	if !ok {
		return 0, 0, false
	}
	rest = rest[n:]
	// Fast path: the generator writes ,"t": right after seq.
	if len(rest) > len(tKey) && rest[0] == ',' && bytes.HasPrefix(rest[1:], tKey) {
		rest = rest[1+len(tKey):]
	} else {
		j := bytes.Index(rest, tKey)
		if j < 0 {
			return 0, 0, false
		}
		rest = rest[j+len(tKey):]
	}
	u, _, ok := parseUint(rest)
	if !ok || u > 1<<63-1 {
		return 0, 0, false
	}
	return seq, int64(u), true
}

// parseUint parses the leading decimal digits of b (at most 19, so it cannot
// overflow) and returns the value and the number of bytes used.
func parseUint(b []byte) (v uint64, n int, ok bool) {
	for n < len(b) && n < 19 {
		c := b[n]
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + uint64(c-'0')
		n++
	}
	if n == 0 || (n < len(b) && b[n] >= '0' && b[n] <= '9') {
		return 0, 0, false
	}
	return v, n, true
}

// frameType returns the "type" of a server frame: every herald frame starts
// with {"type":"…". It returns nil when the frame does not.
func frameType(frame []byte) []byte {
	const prefix = `{"type":"`
	if len(frame) < len(prefix) || string(frame[:len(prefix)]) != prefix {
		return nil
	}
	rest := frame[len(prefix):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return nil
}

// stringField returns the value of a "key":"value" string field (without
// unescaping; herald's codes and channel names need none), or nil.
func stringField(frame []byte, key string) []byte {
	k := make([]byte, 0, len(key)+4)
	k = append(k, '"')
	k = append(k, key...)
	k = append(k, `":"`...)
	i := bytes.Index(frame, k)
	if i < 0 {
		return nil
	}
	rest := frame[i+len(k):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return nil
}

// uintField returns the value of a "key":123 number field.
func uintField(frame []byte, key string) (uint64, bool) {
	k := make([]byte, 0, len(key)+3)
	k = append(k, '"')
	k = append(k, key...)
	k = append(k, `":`...)
	i := bytes.Index(frame, k)
	if i < 0 {
		return 0, false
	}
	v, _, ok := parseUint(frame[i+len(k):])
	return v, ok
}

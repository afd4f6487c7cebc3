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

var (
	seqKey = []byte(`"seq":`)
	tKey   = []byte(`"t":`)
)

// minPayload is the smallest payload size that is always met exactly: the
// data object with an empty pad, for the largest seq and t values the
// generator produces (seq < 10^10, t < 10^19). Smaller sizes give the
// smallest object possible.
const minPayload = len(`{"seq":9999999999,"t":9999999999999999999,"pad":""}`)

// appendPayload appends the data object for (seq, t), padded so the object is
// exactly size bytes when size leaves room for the pad field, otherwise as
// small as possible.
func appendPayload(b []byte, seq uint64, t int64, size int) []byte {
	start := len(b)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	const padOverhead = len(`,"pad":""}`)
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

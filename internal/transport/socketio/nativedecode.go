package socketio

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/herald-rt/herald/internal/jsonscan"
	"github.com/herald-rt/herald/internal/protocol"
)

// decodeNative decodes one native frame into f. Herald's flat replies
// (subscribed, unsubscribed, published, error…: members whose values are
// strings without escapes, numbers, booleans or null) are scanned in
// place, their raw members sharing frame's bytes; anything else (a
// message's data object, a history's publications, an escape) goes
// through encoding/json, with the same result.
func decodeNative(frame []byte, f *nativeFrame) error {
	if decodeFlat(frame, f) {
		return nil
	}
	g := new(nativeFrame) // its own variable: only this path moves a frame to the heap
	if err := json.Unmarshal(frame, g); err != nil {
		return err
	}
	*f = *g
	return nil
}

// trueValue and falseValue are what a scanned frame's Recovered points to.
var trueValue, falseValue = true, false

// decodeFlat scans frame, a JSON object of flat members, into f (zero);
// false (f then undefined) when frame is anything else, or has a member
// nativeFrame does not name exactly.
func decodeFlat(frame []byte, f *nativeFrame) bool {
	b := frame[jsonscan.SkipSpace(frame, 0):]
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return false
	}
	b = b[1 : len(b)-1]
	for i := jsonscan.SkipSpace(b, 0); i < len(b); {
		key, j, ok := scanString(b, i)
		if !ok {
			return false
		}
		if j = jsonscan.SkipSpace(b, j); j >= len(b) || b[j] != ':' {
			return false
		}
		j = jsonscan.SkipSpace(b, j+1)
		end, ok := scanScalar(b, j)
		if !ok || !f.set(key, b[j:end:end]) {
			return false
		}
		i = jsonscan.SkipSpace(b, end)
		if i < len(b) {
			if b[i] != ',' {
				return false
			}
			if i = jsonscan.SkipSpace(b, i+1); i >= len(b) {
				return false // a trailing comma
			}
		}
	}
	return true
}

// set sets the member named key to the JSON scalar v, as encoding/json
// would; false when it would not, or key is not one of f's.
func (f *nativeFrame) set(key []byte, v []byte) bool {
	null := string(v) == "null"
	switch string(key) {
	case "type":
		if !null && v[0] == '"' {
			f.Type = frameType(v[1 : len(v)-1])
		}
		return null || v[0] == '"'
	case "channel":
		return null || setString(&f.Channel, v)
	case "event":
		return null || setString(&f.Event, v)
	case "from":
		return null || setString(&f.From, v)
	case "epoch":
		return null || setString(&f.Epoch, v)
	case "code":
		return null || setString(&f.Code, v)
	case "message":
		return null || setString(&f.Message, v)
	case "data":
		f.Data = v
	case "id":
		f.ID = v
	case "timestamp":
		return null || (v[0] == '"' && f.Timestamp.UnmarshalJSON(v) == nil)
	case "offset":
		if !null {
			n, err := strconv.ParseUint(string(v), 10, 64)
			f.Offset = n
			return err == nil
		}
	case "recovered":
		switch string(v) {
		case "true":
			f.Recovered = &trueValue
		case "false":
			f.Recovered = &falseValue
		default:
			f.Recovered = nil
			return null
		}
	case "duplicate":
		return null || setBool(&f.Duplicate, v)
	case "truncated":
		return null || setBool(&f.Truncated, v)
	case "publications":
		f.Publications = nil
		return null
	default:
		return false
	}
	return true
}

// frameType is the type t names: a constant for the replies a socket's
// commands get.
func frameType(t []byte) string {
	for _, k := range [...]string{protocol.TypeSubscribed, protocol.TypeUnsubscribed, protocol.TypePublished, protocol.TypeError} {
		if string(t) == k {
			return k
		}
	}
	return string(t)
}

func setString(dst *string, v []byte) bool {
	if v[0] != '"' {
		return false
	}
	*dst = string(v[1 : len(v)-1])
	return true
}

func setBool(dst *bool, v []byte) bool {
	switch string(v) {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		return false
	}
	return true
}

// scanString scans the JSON string at b[i], which may hold no escape and
// no control character and must be valid UTF-8: its contents, and the
// index past it.
func scanString(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s = b[i+1 : j]
			return s, j + 1, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// scanScalar returns the index past the JSON scalar at b[i]: a string as
// scanString takes, a number, true, false or null.
func scanScalar(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		_, next, ok := scanString(b, i)
		return next, ok
	case 't', 'f', 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if bytes.HasPrefix(b[i:], []byte(lit)) {
				return i + len(lit), true
			}
		}
		return 0, false
	}
	j := i
	for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		j++
	}
	return j, j > i && json.Valid(b[i:j])
}

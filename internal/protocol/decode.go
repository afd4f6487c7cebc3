package protocol

import (
	"github.com/herald-rt/herald/internal/jsonscan"
)

// Command field bits, to see a field given twice.
const (
	fieldType uint16 = 1 << iota
	fieldChannel
	fieldData
	fieldID
	fieldTimestamp
	fieldEvent
	fieldEvents
	fieldSince
	fieldLimit
	fieldIdempotencyKey
)

// decodeExact decodes b, a JSON object that json.Valid has accepted, into
// the zero Command c when every member is of the shape clients send: a
// field name spelled exactly as in the protocol, given once; strings
// without escapes; a limit that is a plain integer; events and since absent
// or null. It reports false for anything else, and leaves c to
// encoding/json then: unknown and differently cased names (which
// encoding/json matches case-insensitively), escapes, invalid UTF-8, type
// errors, duplicates (where encoding/json merges objects) and the nested
// events and since.
//
// This is the path of every command a client sends (its cost:
// BenchmarkDecodeCommand, docs/performance.md). FuzzDecodeCommand checks
// that whenever it reports true, c is what json.Unmarshal gives.
func (c *Command) decodeExact(b []byte) bool {
	var seen uint16
	i := jsonscan.SkipSpace(b, 0) + 1 // past the '{'
	for {
		if i = jsonscan.SkipSpace(b, i); b[i] == ',' {
			i = jsonscan.SkipSpace(b, i+1)
		}
		if b[i] == '}' {
			return true
		}
		end := jsonscan.StringEnd(b, i)
		name, ok := jsonscan.Plain(b[i:end])
		if !ok {
			return false
		}
		i = jsonscan.SkipSpace(b, jsonscan.SkipSpace(b, end)+1) // past the colon
		end = jsonscan.ValueEnd(b, i)
		v := b[i:end]
		i = end
		var bit uint16
		switch string(name) {
		case "type":
			bit = fieldType
			if string(v) != "null" {
				var t []byte
				if t, ok = jsonscan.Plain(v); ok {
					c.Type = commandType(t)
				}
			}
		case "channel":
			bit = fieldChannel
			ok = setString(&c.Channel, v)
		case "event":
			bit = fieldEvent
			ok = setString(&c.Event, v)
		case "idempotencyKey":
			bit = fieldIdempotencyKey
			ok = setString(&c.IdempotencyKey, v)
		case "data":
			bit = fieldData
			c.Data = append([]byte(nil), v...)
		case "id":
			bit = fieldID
			c.ID = append([]byte(nil), v...)
		case "timestamp":
			bit = fieldTimestamp
			c.Timestamp = append([]byte(nil), v...)
		case "limit":
			bit = fieldLimit
			ok = setInt(&c.Limit, v)
		case "events":
			bit = fieldEvents
			ok = string(v) == "null" // c.Events stays nil, as encoding/json leaves it
		case "since":
			bit = fieldSince
			ok = string(v) == "null"
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
}

// setString sets *dst from v, a string value without escapes, or leaves it
// for null (as encoding/json does). It reports false for anything else.
func setString(dst *string, v []byte) bool {
	if string(v) == "null" {
		return true
	}
	s, ok := jsonscan.Plain(v)
	if ok {
		*dst = string(s)
	}
	return ok
}

// commandType returns t as a string: for a type herald knows, its
// constant, so that decoding it allocates nothing.
func commandType(t []byte) string {
	switch string(t) {
	case TypeSubscribe:
		return TypeSubscribe
	case TypeUnsubscribe:
		return TypeUnsubscribe
	case TypeMessage:
		return TypeMessage
	case TypePing:
		return TypePing
	case TypePong:
		return TypePong
	case TypeHistory:
		return TypeHistory
	case TypePresence:
		return TypePresence
	}
	return string(t)
}

// setInt sets *dst from v, an integer of at most 9 digits (which fits an
// int on 32-bit platforms too) without a fraction or exponent, or leaves it
// for null. It reports false for anything else (encoding/json refuses a
// fraction for an int field, and a number that overflows it).
func setInt(dst *int, v []byte) bool {
	if string(v) == "null" {
		return true
	}
	digits := v
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 9 {
		return false
	}
	n := 0
	for _, d := range digits {
		if d < '0' || d > '9' {
			return false
		}
		n = n*10 + int(d-'0')
	}
	if len(v) > len(digits) {
		n = -n
	}
	*dst = n
	return true
}

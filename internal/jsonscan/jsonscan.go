// Package jsonscan holds the few scanning steps herald's hand-written JSON
// decoders share: the JWT claims decoder (one token per connect) and the
// client command decoder (one per frame). Both decode objects of a known,
// small shape faster and with fewer allocations than encoding/json's
// reflection, and both call these helpers only on input that json.Valid has
// accepted: every string is terminated and every bracket matched, so the
// scanning needs no error paths.
package jsonscan

import (
	"bytes"
	"unicode/utf8"
)

// SkipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func SkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// StringEnd returns the index just past the JSON string that starts at i.
func StringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// ValueEnd returns the index just past the JSON value that starts at i.
func ValueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return StringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = StringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// Plain returns the contents of s, a JSON string token with its quotes,
// when they need no decoding: no escape sequence and valid UTF-8 (which
// encoding/json would replace with U+FFFD). ok is false otherwise.
func Plain(s []byte) (contents []byte, ok bool) {
	if len(s) < 2 || s[0] != '"' || bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s) {
		return nil, false
	}
	return s[1 : len(s)-1], true
}

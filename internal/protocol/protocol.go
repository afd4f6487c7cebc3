// Package protocol defines herald's wire format: the JSON commands a client
// sends, the frames the server sends back, error codes and close codes.
//
// Every frame is one JSON object in one WebSocket text frame, compatible with
// the seed protocol {"type","channel","data","timestamp"}. Encoders append to a
// caller's buffer so a publication is serialised once for all subscribers.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// Command types a client may send.
const (
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypeMessage     = "message"
	TypePing        = "ping"
	TypePong        = "pong"
)

// Frame types the server sends.
const (
	TypeConnected    = "connected"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypePublished    = "published"
	TypeError        = "error"
)

// MaxIDLen bounds the id a client may attach to a command.
const MaxIDLen = 128

// Command is one decoded client frame.
type Command struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	// ID is echoed verbatim (a JSON string or number) in the reply.
	ID json.RawMessage `json:"id"`
	// Timestamp is accepted for seed compatibility and ignored.
	Timestamp json.RawMessage `json:"timestamp"`
}

// DecodeCommand parses one client frame. Errors are *Error with CodeBadJSON
// (not a JSON object) or CodeBadRequest (a field of the wrong shape).
func DecodeCommand(b []byte) (Command, error) {
	var cmd Command
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return cmd, NewError(CodeBadJSON, "frame must be a JSON object")
	}
	if err := json.Unmarshal(t, &cmd); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Command{}, NewError(CodeBadRequest, "field "+strconv.Quote(te.Field)+" has the wrong type")
		}
		return Command{}, NewError(CodeBadJSON, "invalid JSON")
	}
	if len(cmd.ID) > 0 {
		if !validID(cmd.ID) {
			return Command{ID: nil}, NewError(CodeBadRequest, "id must be a string or a number of at most 128 bytes")
		}
	}
	if string(cmd.Data) == "null" {
		cmd.Data = nil
	}
	return cmd, nil
}

func validID(id json.RawMessage) bool {
	if len(id) > MaxIDLen {
		return false
	}
	switch c := id[0]; {
	case c == '"':
		return true
	case c == '-' || (c >= '0' && c <= '9'):
		return true
	}
	return false
}

// AppendTime appends t as RFC 3339 in UTC with milliseconds, quoted.
func AppendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	return append(b, '"')
}

// Message is a publication as delivered to subscribers.
type Message struct {
	Channel string
	Data    json.RawMessage // nil encodes as null
	Time    time.Time
	From    string // publisher's user id; empty for the server API
}

// AppendMessage appends {"type":"message","channel","data","timestamp","from"}.
func AppendMessage(b []byte, m *Message) []byte {
	b = append(b, `{"type":"message","channel":`...)
	b = AppendString(b, m.Channel)
	b = append(b, `,"data":`...)
	b = appendRaw(b, m.Data)
	b = append(b, `,"timestamp":`...)
	b = AppendTime(b, m.Time)
	if m.From != "" {
		b = append(b, `,"from":`...)
		b = AppendString(b, m.From)
	}
	return append(b, '}')
}

// Connected describes the frame sent when a connection opens.
type Connected struct {
	ClientID     string
	UserID       string
	Role         string
	OrgID        string
	Time         time.Time
	PingInterval time.Duration
}

// AppendConnected appends the "connected" frame.
func AppendConnected(b []byte, c *Connected) []byte {
	b = append(b, `{"type":"connected","clientId":`...)
	b = AppendString(b, c.ClientID)
	b = append(b, `,"userId":`...)
	b = AppendString(b, c.UserID)
	if c.Role != "" {
		b = append(b, `,"role":`...)
		b = AppendString(b, c.Role)
	}
	if c.OrgID != "" {
		b = append(b, `,"org":`...)
		b = AppendString(b, c.OrgID)
	}
	b = append(b, `,"timestamp":`...)
	b = AppendTime(b, c.Time)
	b = append(b, `,"pingInterval":`...)
	b = strconv.AppendInt(b, c.PingInterval.Milliseconds(), 10)
	return append(b, '}')
}

// AppendAck appends {"type":typ,"channel":channel,"id":id} (subscribed,
// unsubscribed, published). channel and id are omitted when empty.
func AppendAck(b []byte, typ, channel string, id json.RawMessage) []byte {
	b = append(b, `{"type":`...)
	b = AppendString(b, typ)
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = AppendString(b, channel)
	}
	b = appendID(b, id)
	return append(b, '}')
}

// AppendPong appends {"type":"pong","timestamp":…}.
func AppendPong(b []byte, t time.Time, id json.RawMessage) []byte {
	b = append(b, `{"type":"pong","timestamp":`...)
	b = AppendTime(b, t)
	b = appendID(b, id)
	return append(b, '}')
}

// AppendError appends {"type":"error","code","message","channel"?,"id"?}.
func AppendError(b []byte, code Code, msg, channel string, id json.RawMessage) []byte {
	b = append(b, `{"type":"error","code":`...)
	b = AppendString(b, string(code))
	b = append(b, `,"message":`...)
	b = AppendString(b, msg)
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = AppendString(b, channel)
	}
	b = appendID(b, id)
	return append(b, '}')
}

func appendID(b []byte, id json.RawMessage) []byte {
	if len(id) == 0 {
		return b
	}
	b = append(b, `,"id":`...)
	return append(b, id...)
}

func appendRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, so
// the output is always valid JSON and valid UTF-8.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript string literals.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

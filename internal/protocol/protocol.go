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
	TypeHistory     = "history"
	TypePresence    = "presence"
)

// UnknownTypeMessage is the message of the unknown_type error a command of
// any other type gets: it names every command type above.
const UnknownTypeMessage = "unknown type; expected subscribe, unsubscribe, message, history, presence, ping or pong"

// Frame types the server sends.
const (
	TypeConnected    = "connected"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypePublished    = "published"
	TypeError        = "error"
	TypeJoin         = "join"
	TypeLeave        = "leave"
)

// Limits on command fields.
const (
	MaxEvents       = 64  // event names in a subscribe filter
	MaxEventLen     = 64  // bytes in one event name
	MaxIdemKeyLen   = 128 // bytes in an idempotency key
	MaxHistoryLimit = 1000
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
	// Event names a publication (message) for filtering.
	Event string `json:"event"`
	// Events, on subscribe, restricts deliveries to these event names.
	Events []string `json:"events"`
	// Since, on subscribe or history, asks for what was published after a point.
	Since *Since `json:"since"`
	// Limit bounds a history reply.
	Limit int `json:"limit"`
	// IdempotencyKey makes a retried message a no-op.
	IdempotencyKey string `json:"idempotencyKey"`
}

// Since is a stream position given by a client: an offset in an epoch, or
// an RFC 3339 time.
type Since struct {
	Offset *uint64 `json:"offset"`
	Epoch  string  `json:"epoch"`
	Time   string  `json:"time"`
}

// ValidEvent reports whether e is an acceptable event name: 1–64 bytes of
// letters, digits and _ - : . @ (the channel alphabet).
func ValidEvent(e string) bool { return len(e) <= MaxEventLen && ValidChannel(e) }

// Validate checks the optional fields shared by several commands.
func (c *Command) Validate() error {
	if c.Event != "" && !ValidEvent(c.Event) {
		return NewError(CodeBadRequest, "event must be 1-64 letters, digits or _ - : . @")
	}
	if c.Events != nil {
		if len(c.Events) > MaxEvents {
			return NewError(CodeBadRequest, "at most 64 events")
		}
		for _, e := range c.Events {
			if !ValidEvent(e) {
				return NewError(CodeBadRequest, "events must be 1-64 letters, digits or _ - : . @")
			}
		}
	}
	if len(c.IdempotencyKey) > MaxIdemKeyLen {
		return NewError(CodeBadRequest, "idempotencyKey longer than 128 bytes")
	}
	if c.Limit < 0 {
		return NewError(CodeBadRequest, "limit must not be negative")
	}
	if c.Since != nil {
		if c.Since.Time == "" && (c.Since.Offset == nil || c.Since.Epoch == "") {
			return NewError(CodeBadRequest, `since needs {"offset","epoch"} or {"time"}`)
		}
		if c.Since.Time != "" {
			if _, err := time.Parse(time.RFC3339Nano, c.Since.Time); err != nil {
				return NewError(CodeBadRequest, "since.time must be RFC 3339")
			}
		}
	}
	return nil
}

// DecodeCommand parses one client frame. Errors are *Error with CodeBadJSON
// (not a JSON object) or CodeBadRequest (a field of the wrong shape).
func DecodeCommand(b []byte) (Command, error) {
	var cmd Command
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return cmd, NewError(CodeBadJSON, "frame must be a JSON object")
	}
	if !json.Valid(t) {
		return cmd, NewError(CodeBadJSON, "invalid JSON")
	}
	if !cmd.decodeExact(t) {
		var general Command // its own variable: only this path moves it to the heap
		if err := decodeGeneral(t, &general); err != nil {
			// A member of the wrong type leaves the others decoded, so the
			// error frame can still carry the channel and id it is about.
			known := Command{Type: general.Type, Channel: general.Channel}
			if len(general.ID) > 0 && validID(general.ID) {
				known.ID = general.ID
			}
			return known, err
		}
		cmd = general
	}
	if len(cmd.ID) > 0 {
		if !validID(cmd.ID) {
			return Command{Type: cmd.Type, Channel: cmd.Channel}, NewError(CodeBadRequest, "id must be a string or a number of at most 128 bytes")
		}
	}
	if string(cmd.Data) == "null" {
		cmd.Data = nil
	}
	return cmd, nil
}

// decodeGeneral decodes what decodeExact leaves: any valid JSON object.
func decodeGeneral(t []byte, cmd *Command) error {
	if err := json.Unmarshal(t, cmd); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return NewError(CodeBadRequest, "field "+strconv.Quote(te.Field)+" has the wrong type")
		}
		return NewError(CodeBadJSON, "invalid JSON")
	}
	return nil
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

// Time is a time that encodes as herald writes every timestamp: RFC 3339 in
// UTC with milliseconds ("2026-11-22T08:00:00.000Z"), as AppendTime does.
type Time time.Time

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) { return AppendTime(nil, time.Time(t)), nil }

// Message is a publication as delivered to subscribers.
type Message struct {
	Channel string
	Data    json.RawMessage // nil encodes as null
	Time    time.Time
	From    string // publisher's user id; empty for the server API
	Offset  uint64 // position in the channel's stream; 0 omits it
	Event   string // optional event name
	Epoch   string // the epoch of Offset, when known; never encoded here
}

// AppendMessage appends {"type":"message","channel","data","timestamp","from"}.
func AppendMessage(b []byte, m *Message) []byte {
	b = append(b, `{"type":"message","channel":`...)
	b = AppendString(b, m.Channel)
	b = append(b, `,"data":`...)
	b = appendRaw(b, m.Data)
	b = append(b, `,"timestamp":`...)
	b = AppendTime(b, m.Time)
	return appendPubFields(b, m)
}

// appendPubFields appends ,"from","offset","event" (when set) and the closing brace.
func appendPubFields(b []byte, m *Message) []byte {
	if m.From != "" {
		b = append(b, `,"from":`...)
		b = AppendString(b, m.From)
	}
	if m.Offset != 0 {
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, m.Offset, 10)
	}
	if m.Event != "" {
		b = append(b, `,"event":`...)
		b = AppendString(b, m.Event)
	}
	return append(b, '}')
}

// Position is a stream position as sent to clients.
type Position struct {
	Offset uint64
	Epoch  string
}

// AppendSubscribed appends {"type":"subscribed","channel","offset","epoch",
// "recovered"?,"id"?}. recovered is included when non-nil (a "since" was given).
func AppendSubscribed(b []byte, channel string, pos Position, recovered *bool, id json.RawMessage) []byte {
	b = append(b, `{"type":"subscribed","channel":`...)
	b = AppendString(b, channel)
	b = appendPosition(b, pos)
	if recovered != nil {
		b = append(b, `,"recovered":`...)
		b = strconv.AppendBool(b, *recovered)
	}
	b = appendID(b, id)
	return append(b, '}')
}

func appendPosition(b []byte, pos Position) []byte {
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, pos.Offset, 10)
	b = append(b, `,"epoch":`...)
	return AppendString(b, pos.Epoch)
}

// AppendPublished appends the ack of a client publish with its position.
func AppendPublished(b []byte, channel string, pos Position, duplicate bool, id json.RawMessage) []byte {
	b = append(b, `{"type":"published","channel":`...)
	b = AppendString(b, channel)
	b = appendPosition(b, pos)
	if duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	b = appendID(b, id)
	return append(b, '}')
}

// AppendHistory appends {"type":"history","channel","offset","epoch",
// "publications":[{"data","timestamp","from"?,"offset","event"?},…],
// "truncated":true?,"id"?}.
func AppendHistory(b []byte, channel string, pos Position, pubs []Message, truncated bool, id json.RawMessage) []byte {
	b = append(b, `{"type":"history","channel":`...)
	b = AppendString(b, channel)
	b = appendPosition(b, pos)
	b = append(b, `,"publications":[`...)
	for i := range pubs {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendPublication(b, &pubs[i])
	}
	b = append(b, ']')
	if truncated {
		b = append(b, `,"truncated":true`...)
	}
	b = appendID(b, id)
	return append(b, '}')
}

// AppendPublication appends one history entry {"data","timestamp","from"?,"offset","event"?}.
func AppendPublication(b []byte, m *Message) []byte {
	b = append(b, `{"data":`...)
	b = appendRaw(b, m.Data)
	b = append(b, `,"timestamp":`...)
	b = AppendTime(b, m.Time)
	return appendPubFields(b, m)
}

// JoinLeave is a notice that a connection joined or left a channel.
type JoinLeave struct {
	Type     string // TypeJoin or TypeLeave
	Channel  string
	ClientID string
	UserID   string
}

// AppendJoinLeave appends {"type":"join"|"leave","channel","user":{"clientId","userId"}}.
func AppendJoinLeave(b []byte, typ, channel, clientID, userID string) []byte {
	b = append(b, `{"type":`...)
	b = AppendString(b, typ)
	b = append(b, `,"channel":`...)
	b = AppendString(b, channel)
	b = append(b, `,"user":{"clientId":`...)
	b = AppendString(b, clientID)
	b = append(b, `,"userId":`...)
	b = AppendString(b, userID)
	return append(b, `}}`...)
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

package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/herald-rt/herald/internal/jsonscan"
)

// SType is a Socket.IO packet type, as its ASCII digit on the wire.
type SType byte

// Socket.IO v5 packet types.
const (
	SConnect      SType = '0'
	SDisconnect   SType = '1'
	SEvent        SType = '2'
	SAck          SType = '3'
	SConnectError SType = '4'
	SBinaryEvent  SType = '5'
	SBinaryAck    SType = '6'
)

// MaxAckID is the largest ack id accepted: the largest integer a JavaScript
// number holds exactly, which is what socket.io-client counts with.
const MaxAckID = 1<<53 - 1

// MaxAttachments bounds the binary attachments one packet may announce.
const MaxAttachments = 10

// SPacket is one Socket.IO packet, carried in an Engine.IO message packet.
// Nsp is the namespace ("/" when the packet names none). ID is the ack id,
// or -1 for none. Attachments is the number of binary attachments that
// follow a binary packet. Data is the packet's JSON payload (nil when it has
// none), aliasing the decoded input.
type SPacket struct {
	Type        SType
	Attachments int
	Nsp         string
	ID          int64
	Data        []byte
}

// ParseSPacket decodes a Socket.IO packet and checks its payload's shape
// the way socket.io-parser does: CONNECT carries an object or nothing,
// DISCONNECT nothing, CONNECT_ERROR an object or a string, EVENT a non-empty
// array whose first element (the event name) is a string, ACK an array.
func ParseSPacket(b []byte) (SPacket, error) {
	p := SPacket{Nsp: "/", ID: -1}
	if len(b) == 0 {
		return p, ErrEmpty
	}
	p.Type = SType(b[0])
	if p.Type < SConnect || p.Type > SBinaryAck {
		return p, ErrUnknownType
	}
	b = b[1:]
	if p.Type == SBinaryEvent || p.Type == SBinaryAck {
		i := bytes.IndexByte(b, '-')
		if i <= 0 || i > 2 {
			return p, ErrBadAttachment
		}
		n, ok := digits(b[:i])
		if !ok || n > MaxAttachments {
			return p, ErrBadAttachment
		}
		p.Attachments = int(n)
		b = b[i+1:]
	}
	if len(b) > 0 && b[0] == '/' {
		i := bytes.IndexByte(b, ',')
		if i < 0 {
			i = len(b)
		}
		p.Nsp = string(b[:i])
		if !validNamespace(p.Nsp) {
			return p, ErrBadNamespace
		}
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i > 0 {
		n, ok := digits(b[:i])
		if !ok || n > MaxAckID {
			return p, ErrBadAckID
		}
		p.ID = int64(n)
		b = b[i:]
	}
	if len(b) > 0 {
		p.Data = b
	}
	if !validPayload(&p) {
		return p, ErrBadPayload
	}
	return p, nil
}

// digits parses a run of ASCII digits of at most 16 characters.
func digits(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// validNamespace accepts "/" followed by printable ASCII other than ','.
func validNamespace(n string) bool {
	if len(n) == 0 || len(n) > 256 || n[0] != '/' {
		return false
	}
	for i := 1; i < len(n); i++ {
		if c := n[i]; c <= ' ' || c >= 0x7f || c == ',' {
			return false
		}
	}
	return true
}

// validPayload checks p.Data is well-formed JSON of the shape p.Type takes.
func validPayload(p *SPacket) bool {
	if p.Data == nil {
		return p.Type == SConnect || p.Type == SDisconnect
	}
	if p.ID >= 0 && p.Type != SEvent && p.Type != SBinaryEvent && p.Type != SAck && p.Type != SBinaryAck {
		return false
	}
	if !json.Valid(p.Data) {
		return false
	}
	first := firstNonSpace(p.Data)
	switch p.Type {
	case SConnect:
		return first == '{'
	case SDisconnect:
		return false
	case SConnectError:
		return first == '{' || first == '"'
	case SAck, SBinaryAck:
		return first == '['
	default: // events
		if first != '[' {
			return false
		}
		raw, _, ok := firstElem(p.Data)
		if !ok {
			return false
		}
		name, err := jsonString(raw)
		return err == nil && !reserved[name]
	}
}

// reserved are the event names socket.io-parser refuses in an EVENT: the
// client library's own lifecycle events.
var reserved = map[string]bool{
	"connect": true, "connect_error": true, "disconnect": true,
	"disconnecting": true, "newListener": true, "removeListener": true,
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// EventName returns the event name of an EVENT payload (a JSON array whose
// first element is a string). data must be valid JSON.
func EventName(data []byte) (string, error) {
	raw, _, ok := firstElem(data)
	if !ok {
		return "", ErrBadPayload
	}
	return jsonString(raw)
}

// EventArgs splits an EVENT payload into its name and its arguments, each
// the raw JSON of one argument (sharing data's bytes).
func EventArgs(data []byte) (string, []json.RawMessage, error) {
	if !json.Valid(data) {
		return "", nil, ErrBadPayload
	}
	raw, i, ok := firstElem(data)
	if !ok {
		return "", nil, ErrBadPayload
	}
	name, err := jsonString(raw)
	if err != nil {
		return "", nil, err
	}
	var args []json.RawMessage
	for {
		i = jsonscan.SkipSpace(data, i)
		if i >= len(data) || data[i] != ',' {
			break
		}
		if i = jsonscan.SkipSpace(data, i+1); i >= len(data) {
			return "", nil, ErrBadPayload
		}
		end := jsonscan.ValueEnd(data, i)
		if end <= i {
			return "", nil, ErrBadPayload
		}
		args = append(args, json.RawMessage(data[i:end:end]))
		i = end
	}
	if i >= len(data) || data[i] != ']' {
		return "", nil, ErrBadPayload
	}
	return name, args, nil
}

// firstElem returns the first element of the JSON array data (valid JSON),
// and the index just past it; ok is false when data is no array or an
// empty one.
func firstElem(data []byte) (raw []byte, next int, ok bool) {
	i := jsonscan.SkipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, 0, false
	}
	if i = jsonscan.SkipSpace(data, i+1); i >= len(data) {
		return nil, 0, false
	}
	end := jsonscan.ValueEnd(data, i)
	if end <= i {
		return nil, 0, false
	}
	return data[i:end], end, true
}

// jsonString decodes the JSON value raw as a string: without a copy of
// the decoder's when it has no escapes.
func jsonString(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", ErrBadPayload
	}
	if s, ok := jsonscan.Plain(raw); ok {
		return string(s), nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", ErrBadPayload
	}
	return s, nil
}

// AppendSPacketHead appends a packet's type, attachment count, namespace and
// ack id: everything before its JSON payload.
func AppendSPacketHead(dst []byte, t SType, attachments int, nsp string, id int64) []byte {
	dst = append(dst, byte(t))
	if t == SBinaryEvent || t == SBinaryAck {
		dst = strconv.AppendInt(dst, int64(attachments), 10)
		dst = append(dst, '-')
	}
	if nsp != "" && nsp != "/" {
		dst = append(dst, nsp...)
		dst = append(dst, ',')
	}
	if id >= 0 {
		dst = strconv.AppendInt(dst, id, 10)
	}
	return dst
}

// AppendSPacket appends p's encoding (Data is appended as is: it must be
// valid JSON of the shape p.Type takes).
func AppendSPacket(dst []byte, p SPacket) []byte {
	dst = AppendSPacketHead(dst, p.Type, p.Attachments, p.Nsp, p.ID)
	return append(dst, p.Data...)
}

// AppendEvent appends an EVENT packet: name and the given raw JSON
// arguments, with ack id id (-1 for none), on namespace nsp.
func AppendEvent(dst []byte, nsp string, id int64, name string, args ...[]byte) []byte {
	dst = AppendSPacketHead(dst, SEvent, 0, nsp, id)
	dst = append(dst, '[')
	dst = AppendJSONString(dst, name)
	for _, a := range args {
		dst = append(dst, ',')
		dst = append(dst, a...)
	}
	return append(dst, ']')
}

// AppendJSONString appends s as a JSON string (escaping what JSON requires,
// and <, >, & and U+2028/U+2029 like encoding/json).
func AppendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

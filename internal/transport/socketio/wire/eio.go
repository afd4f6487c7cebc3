// Package wire encodes and decodes the Engine.IO v4 and Socket.IO v5 packet
// formats (github.com/socketio/engine.io-protocol and socket.io-protocol).
// It depends on the standard library only, allocates nothing to parse a
// packet beyond what the caller keeps, and never panics on any input: every
// malformed packet is an error.
package wire

import (
	"encoding/base64"
	"errors"
	"strconv"
)

// EType is an Engine.IO packet type, as its ASCII digit on the wire.
type EType byte

// Engine.IO v4 packet types.
const (
	EOpen    EType = '0'
	EClose   EType = '1'
	EPing    EType = '2'
	EPong    EType = '3'
	EMessage EType = '4'
	EUpgrade EType = '5'
	ENoop    EType = '6'
)

// Separator separates packets in an HTTP long-polling payload.
const Separator = 0x1e

// Errors returned by the decoders. A caller answering a client may name
// them: they say what was wrong, never echo the input.
var (
	ErrEmpty         = errors.New("empty packet")
	ErrUnknownType   = errors.New("unknown packet type")
	ErrBadBase64     = errors.New("invalid base64 in binary packet")
	ErrTooLarge      = errors.New("payload exceeds maxPayload")
	ErrBadNamespace  = errors.New("invalid namespace")
	ErrBadAckID      = errors.New("invalid ack id")
	ErrBadAttachment = errors.New("invalid attachment count")
	ErrBadPayload    = errors.New("invalid packet payload")
)

// EPacket is one Engine.IO packet. Data aliases the decoded input (the
// caller copies it to keep it past the input's life). Binary is set for a
// message carried as binary (a binary WebSocket frame, or a "b"-prefixed
// base64 packet in a polling payload); its Type is always EMessage.
type EPacket struct {
	Type   EType
	Data   []byte
	Binary bool
}

// ParseEPacket decodes one Engine.IO packet from a WebSocket text frame or
// one packet of a polling payload. A packet starting with 'b' is a base64
// binary message (polling only); its Data is a new slice.
func ParseEPacket(b []byte) (EPacket, error) {
	if len(b) == 0 {
		return EPacket{}, ErrEmpty
	}
	if b[0] == 'b' {
		d := make([]byte, base64.StdEncoding.DecodedLen(len(b)-1))
		n, err := base64.StdEncoding.Decode(d, b[1:])
		if err != nil {
			return EPacket{}, ErrBadBase64
		}
		return EPacket{Type: EMessage, Data: d[:n], Binary: true}, nil
	}
	t := EType(b[0])
	if t < EOpen || t > ENoop {
		return EPacket{}, ErrUnknownType
	}
	return EPacket{Type: t, Data: b[1:]}, nil
}

// AppendEPacket appends p's text encoding: its type digit and data, or for
// a binary message 'b' and its data in base64 (the polling form; over
// WebSocket a binary message is sent as a binary frame of Data alone).
func AppendEPacket(dst []byte, p EPacket) []byte {
	if p.Binary {
		dst = append(dst, 'b')
		return base64.StdEncoding.AppendEncode(dst, p.Data)
	}
	dst = append(dst, byte(p.Type))
	return append(dst, p.Data...)
}

// ParsePayload splits a polling payload (packets separated by 0x1e) and
// calls fn with each packet in order; it stops at the first error, fn's or
// a decoding one. A payload longer than max bytes (when max > 0) is refused
// whole with ErrTooLarge before anything is decoded.
func ParsePayload(b []byte, max int, fn func(EPacket) error) error {
	if max > 0 && len(b) > max {
		return ErrTooLarge
	}
	if len(b) == 0 {
		return ErrEmpty
	}
	for {
		i := indexByte(b, Separator)
		one := b
		if i >= 0 {
			one = b[:i]
		}
		p, err := ParseEPacket(one)
		if err != nil {
			return err
		}
		if err := fn(p); err != nil {
			return err
		}
		if i < 0 {
			return nil
		}
		b = b[i+1:]
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// AppendOpen appends the open packet of a handshake: sid, the transports a
// client may upgrade to, the heartbeat in milliseconds and maxPayload.
func AppendOpen(dst []byte, sid string, upgrades []string, pingIntervalMS, pingTimeoutMS int64, maxPayload int) []byte {
	dst = append(dst, byte(EOpen))
	dst = append(dst, `{"sid":`...)
	dst = strconv.AppendQuote(dst, sid)
	dst = append(dst, `,"upgrades":[`...)
	for i, u := range upgrades {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendQuote(dst, u)
	}
	dst = append(dst, `],"pingInterval":`...)
	dst = strconv.AppendInt(dst, pingIntervalMS, 10)
	dst = append(dst, `,"pingTimeout":`...)
	dst = strconv.AppendInt(dst, pingTimeoutMS, 10)
	dst = append(dst, `,"maxPayload":`...)
	dst = strconv.AppendInt(dst, int64(maxPayload), 10)
	return append(dst, '}')
}

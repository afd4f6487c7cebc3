package socketio

import (
	"encoding/base64"
	"slices"
	"strconv"
	"strings"

	"github.com/herald-rt/herald/internal/protocol"
)

// position is where a socket is in one room: the epoch of the channel's
// stream and the offset of the last publication the socket was sent.
type position struct {
	epoch  string
	offset uint64
}

// maxRecoveryRooms bounds the rooms a recovery offset may name.
const maxRecoveryRooms = 1000

// appendRecovery appends the recovery offset of a socket in rooms: every
// room's channel, epoch and offset, sorted by channel, base64url-encoded so
// that it is a plain JSON string. Socket.IO clients echo the offset of the
// last event they received on reconnection; this one restores every room.
func appendRecovery(dst []byte, rooms map[string]*position) []byte {
	var stack [256]byte
	raw := stack[:0]
	if len(rooms) == 1 { // most sockets: no order to make
		for ch, p := range rooms {
			raw = appendRoom(raw, ch, p)
		}
		return base64.RawURLEncoding.AppendEncode(dst, raw)
	}
	names := make([]string, 0, len(rooms))
	for ch := range rooms {
		names = append(names, ch)
	}
	slices.Sort(names)
	for i, ch := range names {
		if i > 0 {
			raw = append(raw, '\n')
		}
		raw = appendRoom(raw, ch, rooms[ch])
	}
	return base64.RawURLEncoding.AppendEncode(dst, raw)
}

// appendRoom appends one room's line of a recovery offset.
func appendRoom(raw []byte, ch string, p *position) []byte {
	raw = append(raw, ch...)
	raw = append(raw, ' ')
	raw = strconv.AppendUint(raw, p.offset, 10)
	raw = append(raw, ' ')
	return append(raw, p.epoch...)
}

// parseRecovery decodes a recovery offset; ok is false for anything
// appendRecovery could not have made.
func parseRecovery(s string) (map[string]position, bool) {
	if len(s) > 64<<10 {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, false
	}
	out := make(map[string]position)
	if len(raw) == 0 {
		return out, true
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		ch, rest, ok1 := strings.Cut(line, " ")
		off, epoch, ok2 := strings.Cut(rest, " ")
		n, err := strconv.ParseUint(off, 10, 64)
		if !ok1 || !ok2 || err != nil || !protocol.ValidChannel(ch) || len(epoch) > 256 || strings.ContainsAny(epoch, " \n") {
			return nil, false
		}
		if _, dup := out[ch]; dup || len(out) >= maxRecoveryRooms {
			return nil, false
		}
		out[ch] = position{epoch: epoch, offset: n}
	}
	return out, true
}

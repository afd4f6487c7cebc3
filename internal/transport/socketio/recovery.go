package socketio

import (
	"encoding/base64"
	"iter"
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

// appendRecovery appends the recovery offset of a socket in rooms: '~',
// then every room's channel, epoch and offset (channel|epoch|offset),
// sorted by channel and separated by ','. Channel names and epochs need no
// escaping in a JSON string (protocol.ValidChannel; epochs are hex), so it
// is built with appends alone: it is written per socket and delivery.
// Socket.IO clients echo the offset of the last event they received on
// reconnection; this one restores every room.
func appendRecovery(dst []byte, rooms roomSet) []byte {
	dst = append(dst, recoveryMark)
	for i, r := range rooms.list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendRoom(dst, r.ch, r.pos.epoch, r.pos.offset)
	}
	return dst
}

// recoveryMark starts a recovery offset in appendRecovery's form; one
// without it is the base64url form of earlier versions.
const recoveryMark = '~'

// appendRoom appends one room of a recovery offset.
func appendRoom(dst []byte, ch, epoch string, offset uint64) []byte {
	dst = append(dst, ch...)
	dst = append(dst, '|')
	dst = append(dst, epoch...)
	dst = append(dst, '|')
	return strconv.AppendUint(dst, offset, 10)
}

// recoverySize bounds what appendRecovery appends for rooms.
func recoverySize(rooms roomSet) int {
	n := 1
	for _, r := range rooms.list {
		n += len(r.ch) + len(r.pos.epoch) + 23
	}
	return n
}

// roomSet is a socket's rooms: each channel's position, in channel order.
// A sorted slice rather than a map: most sockets are in one room, which
// it keeps in 24 bytes where a map takes hundreds. The zero value is
// empty.
type roomSet struct{ list []room }

type room struct {
	ch  string
	pos *position
}

func (s *roomSet) find(ch string) (int, bool) {
	return slices.BinarySearchFunc(s.list, ch, func(r room, ch string) int { return strings.Compare(r.ch, ch) })
}

// get returns channel ch's position, or nil.
func (s *roomSet) get(ch string) *position {
	if i, ok := s.find(ch); ok {
		return s.list[i].pos
	}
	return nil
}

// add sets channel ch's position.
func (s *roomSet) add(ch string, pos *position) {
	i, ok := s.find(ch)
	if ok {
		s.list[i].pos = pos
		return
	}
	s.list = slices.Insert(s.list, i, room{ch: ch, pos: pos})
}

// remove drops channel ch.
func (s *roomSet) remove(ch string) {
	if i, ok := s.find(ch); ok {
		s.list = slices.Delete(s.list, i, i+1)
	}
}

func (s *roomSet) len() int { return len(s.list) }

// all yields each channel and its position, in channel order.
func (s *roomSet) all() iter.Seq2[string, *position] {
	return func(yield func(string, *position) bool) {
		for _, r := range s.list {
			if !yield(r.ch, r.pos) {
				return
			}
		}
	}
}

// parseRecovery decodes a recovery offset; ok is false for anything
// appendRecovery could not have made.
func parseRecovery(s string) (map[string]position, bool) {
	if len(s) > 64<<10 {
		return nil, false
	}
	if rest, ok := strings.CutPrefix(s, string(recoveryMark)); ok {
		return parseRooms(rest, ",", "|", func(ch, epoch, off string) (string, string, string) { return ch, epoch, off })
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, false
	}
	// channel offset epoch, one room a line
	return parseRooms(string(raw), "\n", " ", func(ch, off, epoch string) (string, string, string) { return ch, epoch, off })
}

// parseRooms parses rooms separated by sep, each three fields separated by
// fsep, which order names channel, epoch and offset.
func parseRooms(s, sep, fsep string, order func(a, b, c string) (ch, epoch, off string)) (map[string]position, bool) {
	out := make(map[string]position)
	if len(s) == 0 {
		return out, true
	}
	for line := range strings.SplitSeq(s, sep) {
		a, rest, ok1 := strings.Cut(line, fsep)
		b, c, ok2 := strings.Cut(rest, fsep)
		ch, epoch, off := order(a, b, c)
		n, err := strconv.ParseUint(off, 10, 64)
		if !ok1 || !ok2 || err != nil || !protocol.ValidChannel(ch) || !validEpoch(epoch) {
			return nil, false
		}
		if _, dup := out[ch]; dup || len(out) >= maxRecoveryRooms {
			return nil, false
		}
		out[ch] = position{epoch: epoch, offset: n}
	}
	return out, true
}

// validEpoch reports whether epoch may be a broker's epoch: at most 256
// letters, digits, '-' and '_' (so it needs no escaping where it is
// written back).
func validEpoch(epoch string) bool {
	if len(epoch) > 256 {
		return false
	}
	for i := 0; i < len(epoch); i++ {
		c := epoch[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

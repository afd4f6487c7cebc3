package sse

import (
	"errors"
	"strconv"
	"strings"
)

// The event id. Every event that moves a stream's position carries, in its
// id, the position of EVERY channel of the stream, so that the Last-Event-ID
// a client reconnects with restores all of them at once, on any node, with
// no state kept by the server:
//
//	id    = entry *( "." entry )
//	entry = tag ":" offset ":" epoch
//	tag   = 6 lowercase hex digits: FNV-1a of the channel name, its top 24 bits
//	offset = decimal, 0–18446744073709551615, no leading zero
//	epoch = 1–64 of A–Z a–z 0–9 _ -
//
// For example "3c5f0d:42:4be1c0d2a9f3" (one channel) or
// "3c5f0d:42:4be1c0d2a9f3.9a0b11:7:77aa00bb11cc" (two). An entry is what a
// subscribe's since would say — offset and epoch — under a tag naming its
// channel, so a reconnect recovers each channel exactly like
// {"since":{"offset","epoch"}}: the same rules, the same replay-then-live
// order. Channels come from the stream's URL, never from the id: the tag
// only finds a channel's entry (the URL may list the channels in another
// order, or add and drop some, and the positions of the others still
// apply). A forged id can therefore only claim positions in channels the
// request names and is allowed to read, whose recovery re-checks every
// permission; a tag that names the wrong channel carries an epoch that is
// not that channel's, which recovery answers with recovered:false, never
// with another channel's publications.
//
// Size: an entry takes 10 bytes plus the offset's digits and the epoch (23
// for an offset below a million and a 12-character epoch, 32 with the
// Redis broker's 21-character epochs), and a stream holds at most
// MaxChannels channels, so an id stays within MaxIDLen (under 3 KiB; about
// 1 KiB at 32 channels of the usual sizes), which fits the request-header
// limits of browsers and proxies (8 KiB and up).

// Bounds of a stream and of its id.
const (
	// MaxChannels is the most channels one stream may name.
	MaxChannels = 32
	// MaxEpochLen is the longest epoch an id can carry.
	MaxEpochLen = 64
	// maxEntryLen is the longest entry: tag, two colons, 20 digits, epoch.
	maxEntryLen = tagLen + 2 + 20 + MaxEpochLen
	// MaxIDLen bounds an id (MaxChannels entries and their separators).
	MaxIDLen = MaxChannels*(maxEntryLen+1) - 1
	tagLen   = 6
)

// Position is one channel's place in its stream: the offset of the newest
// publication the client has, in epoch.
type Position struct {
	Offset uint64
	Epoch  string
}

// Tag is the short name of a channel in an id.
type Tag uint32

// TagOf returns the tag of channel: the top 24 bits of its 32-bit FNV-1a.
func TagOf(channel string) Tag {
	h := uint32(2166136261)
	for i := 0; i < len(channel); i++ {
		h ^= uint32(channel[i])
		h *= 16777619
	}
	return Tag(h >> 8)
}

const hexDigits = "0123456789abcdef"

func (t Tag) append(b []byte) []byte {
	for shift := 20; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(t>>shift)&0xf])
	}
	return b
}

// validEpoch reports whether an id can carry epoch.
func validEpoch(e string) bool {
	if len(e) == 0 || len(e) > MaxEpochLen {
		return false
	}
	for i := 0; i < len(e); i++ {
		switch c := e[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Cursor is where a stream stands: the position of each of its channels as
// of the last event queued to it. It renders the id of the next event. A
// Cursor is not safe for concurrent use: its owner updates it where it
// queues the stream's events, under that queue's lock. The zero value
// holds no channel.
type Cursor struct {
	entries []cursorEntry
}

type cursorEntry struct {
	channel string
	head    []byte // "tag:"
	epoch   string // ":" + epoch; "" while the position is unknown
	offset  uint64
}

// NewCursor returns a cursor for channels (distinct, at most MaxChannels),
// every position unknown until Set.
func NewCursor(channels []string) *Cursor {
	c := &Cursor{entries: make([]cursorEntry, len(channels))}
	for i, ch := range channels {
		c.entries[i] = cursorEntry{channel: ch, head: append(TagOf(ch).append(make([]byte, 0, tagLen+1)), ':')}
	}
	return c
}

// Index returns the position of channel in the cursor, or -1.
func (c *Cursor) Index(channel string) int {
	for i := range c.entries {
		if c.entries[i].channel == channel {
			return i
		}
	}
	return -1
}

// Set records that the client has channel i up to pos. An epoch an id
// cannot carry leaves the position unknown: the next id has no entry for
// the channel, and a reconnect with it recovers nothing there
// (recovered:false).
func (c *Cursor) Set(i int, pos Position) {
	e := &c.entries[i]
	if !validEpoch(pos.Epoch) {
		e.epoch, e.offset = "", 0
		return
	}
	if len(e.epoch) != len(pos.Epoch)+1 || e.epoch[1:] != pos.Epoch {
		e.epoch = ":" + pos.Epoch
	}
	e.offset = pos.Offset
}

// Advance records that the client has channel i up to offset, in the epoch
// it was Set with: a delivery. An epoch changes only with a new
// subscription (a lost stream ends the connection), so deliveries need not
// carry it. It reports whether the position moved (a delivery at or before
// the position, as a direct message without offset, leaves it).
func (c *Cursor) Advance(i int, offset uint64) bool {
	e := &c.entries[i]
	if e.epoch == "" || offset <= e.offset {
		return false
	}
	e.offset = offset
	return true
}

// Known reports whether channel i's position is known.
func (c *Cursor) Known(i int) bool { return c.entries[i].epoch != "" }

// AppendID appends the "id:" line of the stream's position. With no
// position known it appends nothing: the client keeps the id it had.
func (c *Cursor) AppendID(b []byte) []byte {
	start := len(b)
	b = append(b, "id: "...)
	wrote := false
	for i := range c.entries {
		e := &c.entries[i]
		if e.epoch == "" {
			continue
		}
		if wrote {
			b = append(b, '.')
		}
		wrote = true
		b = append(b, e.head...)
		b = strconv.AppendUint(b, e.offset, 10)
		b = append(b, e.epoch...)
	}
	if !wrote {
		return b[:start]
	}
	return append(b, '\n')
}

// IDSize is an upper bound on what AppendID appends.
func (c *Cursor) IDSize() int {
	n := len("id: \n")
	for i := range c.entries {
		n += tagLen + 2 + 20 + len(c.entries[i].epoch)
	}
	return n
}

// Claims are the positions a Last-Event-ID claims, by channel tag.
type Claims struct {
	entries []claim
}

type claim struct {
	tag Tag
	pos Position
}

// Len returns how many positions c claims.
func (c Claims) Len() int { return len(c.entries) }

// Lookup returns the position c claims for channel, if any. Of two entries
// with channel's tag (two channels whose tags collide) the first is taken;
// applied to the other channel its epoch does not match, which recovery
// reports as recovered:false.
func (c Claims) Lookup(channel string) (Position, bool) {
	t := TagOf(channel)
	for _, e := range c.entries {
		if e.tag == t {
			return e.pos, true
		}
	}
	return Position{}, false
}

// ErrBadID is a Last-Event-ID that herald did not write: too long, or not
// in the id's grammar.
var ErrBadID = errors.New("sse: malformed Last-Event-ID")

// ParseID parses a Last-Event-ID. The empty id claims nothing. Anything
// longer than MaxIDLen, with more than MaxChannels entries, or off the
// grammar by one byte is ErrBadID; parsing allocates only the claims and
// their epochs.
func ParseID(s string) (Claims, error) {
	if s == "" {
		return Claims{}, nil
	}
	if len(s) > MaxIDLen {
		return Claims{}, ErrBadID
	}
	n := strings.Count(s, ".") + 1
	if n > MaxChannels {
		return Claims{}, ErrBadID
	}
	out := Claims{entries: make([]claim, 0, n)}
	for s != "" {
		entry, rest, more := strings.Cut(s, ".")
		if more && rest == "" {
			return Claims{}, ErrBadID
		}
		s = rest
		c, ok := parseEntry(entry)
		if !ok {
			return Claims{}, ErrBadID
		}
		out.entries = append(out.entries, c)
	}
	return out, nil
}

func parseEntry(e string) (claim, bool) {
	if len(e) < tagLen+4 || e[tagLen] != ':' {
		return claim{}, false
	}
	var t Tag
	for i := 0; i < tagLen; i++ {
		d := strings.IndexByte(hexDigits, e[i])
		if d < 0 {
			return claim{}, false
		}
		t = t<<4 | Tag(d)
	}
	num, epoch, ok := strings.Cut(e[tagLen+1:], ":")
	if !ok || len(num) == 0 || len(num) > 20 || (len(num) > 1 && num[0] == '0') || !validEpoch(epoch) {
		return claim{}, false
	}
	for i := 0; i < len(num); i++ {
		if num[i] < '0' || num[i] > '9' {
			return claim{}, false
		}
	}
	off, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return claim{}, false
	}
	return claim{tag: t, pos: Position{Offset: off, Epoch: strings.Clone(epoch)}}, true
}

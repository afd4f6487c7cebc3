// Package broker defines what every herald broker provides: per-channel
// offsets and epochs, bounded history, idempotent publishing, and an atomic
// "join the live stream after replaying history" used for recovery.
//
// Implementations live in sub-packages (memory; later redis) and all pass the
// shared conformance suite in brokertest.
package broker

import (
	"encoding/json"
	"time"
)

// Publication is one message in a channel's stream.
type Publication struct {
	Offset uint64          // 1 for the first publication of an epoch, then +1 each
	Time   time.Time       // when the broker accepted it
	Data   json.RawMessage // nil means null
	Event  string          // optional event name, for filtering
	From   string          // publisher's user id; empty for the server API
	// Origin is the publishing connection's client id, excluded from delivery
	// (empty: deliver to all). It is not part of history.
	Origin string
}

// Position is where a channel's stream stands: the offset of its newest
// publication (0 when none) in an epoch. The epoch changes whenever the
// channel's history is lost.
type Position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// HistoryOptions are a channel's retention rules, from its namespace.
type HistoryOptions struct {
	Size int           // publications kept; 0 keeps none
	TTL  time.Duration // how long each is kept; 0 with Size > 0 means no time bound
}

// PublishOptions tune one publish.
type PublishOptions struct {
	History HistoryOptions
	// IdempotencyKey, when set, makes a second publish with the same key within
	// IdempotencyWindow a no-op that reports the first one's offset.
	IdempotencyKey    string
	IdempotencyWindow time.Duration
}

// PublishResult reports a publish.
type PublishResult struct {
	Position
	// Duplicate is set when the idempotency key was seen: nothing was stored
	// or delivered, and Offset is the original publication's.
	Duplicate bool
	// Delivered is what DeliverFunc reported for this node's fan-out.
	Delivered int
}

// Since asks for the publications after a point: an offset in an epoch, or a
// time. Exactly one of Offset/Epoch or Time is meaningful; Time is used when
// it is non-zero.
type Since struct {
	Offset uint64
	Epoch  string
	Time   time.Time
}

// SubscribeOptions tune one Subscribe.
type SubscribeOptions struct {
	// Since, when set, asks for the publications after it (recovery).
	Since *Since
	// History is the channel's retention, as for Publish: a channel that
	// keeps history keeps its epoch for at least the TTL even before its
	// first publication, so a client that subscribed and lost its connection
	// before anything was published still recovers.
	History HistoryOptions
}

// Recovery is what a recovering subscriber receives.
type Recovery struct {
	// Publications after Since, oldest first (all of them when Recovered).
	Publications []Publication
	// Position is the stream's current position.
	Position Position
	// Recovered is true when Publications is exactly everything after Since:
	// same epoch and nothing in between was dropped from history.
	Recovered bool
}

// HistoryQuery selects publications from history.
type HistoryQuery struct {
	Since *Since // nil: the newest Limit publications
	Limit int    // 0: everything retained
}

// DeliverFunc hands a newly accepted publication to the local fan-out and
// returns how many connections it was queued to. It is called in offset
// order per channel, and never concurrently with the join function of a
// Subscribe on the same channel.
type DeliverFunc func(channel string, p *Publication) int

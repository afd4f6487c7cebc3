// Package broker defines what every herald broker provides: per-channel
// offsets and epochs, bounded history, idempotent publishing, and an atomic
// "join the live stream after replaying history" used for recovery.
//
// Implementations live in sub-packages (memory, redis) and all pass the
// shared conformance suite in brokertest.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrUnavailable is returned when a broker cannot reach the state it shares
// with other nodes (Redis down or its subscription not yet live): nothing was
// published or joined, and the caller may retry.
var ErrUnavailable = errors.New("broker unavailable")

// ErrOutcomeUnknown comes with ErrUnavailable when a call reached the shared
// state but its answer did not come back (a timeout, a connection lost
// mid-call): it may have been carried out — a publication stored and
// delivered. A publisher that retries should use an idempotency key.
var ErrOutcomeUnknown = errors.New("no answer: it may have been done")

// Broker is the contract every herald broker implements: per-channel
// offsets and epochs, bounded history, idempotent publishing and the atomic
// replay-then-live join, for one process or for several nodes. It is
// declared here once; each implementation asserts it at compile time
// (var _ broker.Broker = (*Broker)(nil)) and passes brokertest.
//
// The methods are safe for concurrent use. ctx bounds a call: its
// cancellation or deadline ends a wait on shared state (a broker's own
// timeout still applies); a broker that never waits may ignore it. An
// error wrapping ErrUnavailable means the shared state could not be used
// (with ErrOutcomeUnknown: the call may have been carried out).
type Broker interface {
	// Publish gives p the channel's next offset, keeps it in history as o
	// says and hands it to the DeliverFunc of every node that follows the
	// channel, in offset order.
	Publish(ctx context.Context, channel string, p Publication, o PublishOptions) (PublishResult, error)
	// Subscribe joins the channel's live stream: join runs with the
	// recovery o.Since asks for (or the position alone) at a point where no
	// later publication has been delivered yet and none is delivered until
	// join returns, so replay and live stream meet exactly. join must add
	// the subscriber to the fan-out and queue the replay before it returns;
	// its error is Subscribe's.
	Subscribe(ctx context.Context, channel string, o SubscribeOptions, join func(Recovery) error) error
	// History returns retained publications, oldest first, and the
	// channel's current position.
	History(ctx context.Context, channel string, q HistoryQuery) ([]Publication, Position, error)
	// Run does the broker's background work until ctx is done: every sweep
	// it frees channels idle for idle on which inUse reports no local
	// subscribers. Call it once; the broker is done when it returns.
	Run(ctx context.Context, sweep, idle time.Duration, inUse func(channel string) bool)
}

// Optional capabilities: a broker may implement any of these, and the
// server finds them by type assertion.

// Liveness is implemented by a broker that can lose what it shares (the
// Redis connection). A broker without it is always live.
type Liveness interface {
	// Live reports whether Publish and Subscribe can succeed now.
	Live() bool
}

// Notifier is implemented by a broker shared by several nodes: it carries
// a notification (a user's send or disconnect) to every other node.
type Notifier interface {
	// Notify sends kind and payload to every other node; notifications
	// from one node arrive in the order it sent them.
	Notify(ctx context.Context, kind byte, payload string) error
}

// Describer is implemented by a broker with something to say about where
// it keeps its state, for the server's startup log. It never includes a
// secret.
type Describer interface {
	// Describe returns slog key-value pairs.
	Describe() []any
}

// HistoryMeter is implemented by a broker that keeps history in this
// process, within a budget.
type HistoryMeter interface {
	// HistoryBytes is how many bytes of history all channels keep now, as
	// counted against the budget.
	HistoryBytes() int64
}

// ErrIdempotencyFull is returned by a keyed publish when the broker cannot
// remember one more idempotency key for its whole window (its bound on the
// keys' memory is reached): nothing was published. Keys are never forgotten
// inside their window to make room, which would let a retry publish twice.
var ErrIdempotencyFull = errors.New("idempotency keys full")

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
	// Epoch is the epoch of Offset where the broker knows it: always on
	// what it hands its DeliverFunc; history reads may leave it empty.
	// Publish ignores it.
	Epoch string
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

// Stream is what a broker knows of one channel when it answers a recovery:
// its position, its retained publications (oldest first), when its newest
// publication was dropped from history or never kept (zero: never), and when
// the stream was made (what came before is unknown to it).
type Stream struct {
	Position Position
	Items    []Publication
	LostTime time.Time
	Born     time.Time
}

// Recover computes what a subscriber asking for since gets from s. Every
// broker answers recovery with it, so they agree on every case the
// conformance suite checks.
func Recover(s Stream, since Since) Recovery {
	pos, items := s.Position, s.Items
	if !since.Time.IsZero() {
		var out []Publication
		for _, p := range items {
			if p.Time.After(since.Time) {
				out = append(out, p)
			}
		}
		// Nothing after since.Time was lost if the newest publication dropped
		// (or never kept) is not after it, and the stream already existed
		// then: a stream made since (after a restart, or after an idle
		// channel was forgotten) cannot tell what came before it — as a
		// stored epoch no longer matches, the offset form's test. Times reach
		// clients in milliseconds: a since from the millisecond the stream
		// was made in is taken as after it.
		return Recovery{Publications: out, Position: pos, Recovered: !s.LostTime.After(since.Time) && !since.Time.Before(s.Born.Truncate(time.Millisecond))}
	}
	if since.Epoch != pos.Epoch || since.Offset > pos.Offset {
		return Recovery{Position: pos}
	}
	if since.Offset == pos.Offset {
		return Recovery{Position: pos, Recovered: true}
	}
	// Offsets since.Offset+1 … pos.Offset must all be retained.
	if len(items) == 0 || items[0].Offset > since.Offset+1 {
		var tail []Publication
		for _, p := range items {
			if p.Offset > since.Offset {
				tail = append(tail, p)
			}
		}
		return Recovery{Publications: tail, Position: pos}
	}
	start := int(since.Offset + 1 - items[0].Offset)
	return Recovery{Publications: items[start:], Position: pos, Recovered: true}
}

// Every calls f every interval until ctx is done: the brokers' sweepers.
func Every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

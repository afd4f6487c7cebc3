// Package sparselog writes a flood of like events as few log lines: at most
// one line per reason per interval, carrying how many events of that reason
// happened since its previous line. Every refusal a client can cause over
// and over (a bad token, a protocol violation, a slow consumer) is logged
// through it, so that no client can fill a disk or a log pipeline, whatever
// the rate at which it connects.
package sparselog

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Interval is the spacing of a reason's lines that herald uses.
const Interval = 10 * time.Second

// Logger counts events by reason and writes their lines sparingly. The
// zero value is not usable; call New. All methods are safe for concurrent
// use, and cost an atomic add or two when no line is due.
type Logger struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time
	reasons  sync.Map // string → *reason
}

// reason is one reason's count and the time of its last line.
type reason struct {
	n    atomic.Int64 // events since the last line
	last atomic.Int64 // the last line's time, in Unix nanoseconds; 0: none yet
}

// New returns a Logger that writes to log, one line per reason per
// interval.
func New(log *slog.Logger, interval time.Duration) *Logger {
	return &Logger{log: log, interval: interval, now: time.Now}
}

// SetClock makes l read the time from now instead of the wall clock (tests
// drive it). Call it before l is used.
func (l *Logger) SetClock(now func() time.Time) { l.now = now }

// Slog is the logger l writes to, for lines that are not throttled.
func (l *Logger) Slog() *slog.Logger { return l.log }

// Note counts n events of reason and, when reason has had no line for an
// interval (or none yet), calls write with the number of its events since
// its last line, this one's included. write is called by one caller at a
// time per reason, without any lock of l held. A reason must be one of a
// small fixed set (a constant, never a client's words): each is remembered
// for the life of l.
func (l *Logger) Note(name string, n int64, write func(count int64)) {
	r, ok := l.reasons.Load(name)
	if !ok {
		r, _ = l.reasons.LoadOrStore(name, new(reason))
	}
	rs := r.(*reason)
	rs.n.Add(n)
	now := l.now().UnixNano()
	last := rs.last.Load()
	if last != 0 && now-last < l.interval.Nanoseconds() {
		return
	}
	if !rs.last.CompareAndSwap(last, now) {
		return // another caller writes this interval's line
	}
	write(rs.n.Swap(0))
}

// Pending is how many events of reason happened since its last line.
func (l *Logger) Pending(name string) int64 {
	if r, ok := l.reasons.Load(name); ok {
		return r.(*reason).n.Load()
	}
	return 0
}

// Log counts one event whose reason is msg and, when a line is due, logs
// msg at level with args and the count since the last line ("count").
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	l.Note(msg, 1, func(count int64) {
		l.log.Log(context.Background(), level, msg, append(args, "count", count)...)
	})
}

// Info is Log at slog.LevelInfo.
func (l *Logger) Info(msg string, args ...any) { l.Log(slog.LevelInfo, msg, args...) }

// Warn is Log at slog.LevelWarn.
func (l *Logger) Warn(msg string, args ...any) { l.Log(slog.LevelWarn, msg, args...) }

// Error is Log at slog.LevelError.
func (l *Logger) Error(msg string, args ...any) { l.Log(slog.LevelError, msg, args...) }

// ManualClock is a clock that moves only when told to, for tests:
// l.SetClock(c.Now). Its zero value reads 2026-01-01 UTC until advanced.
type ManualClock struct {
	mu sync.Mutex
	d  time.Duration
}

var manualEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Now is the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return manualEpoch.Add(c.d)
}

// Advance moves the clock d forward.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

// Package gogroup counts the goroutines a component starts, so that their
// owner can wait until every one of them has exited.
//
// A Group is the one place a server's per-connection goroutines are started
// (Go) and its delayed calls scheduled (AfterFunc): Wait then returns once
// none runs or is pending, or when its context ends. Starting goroutines
// while another goroutine waits is allowed (unlike sync.WaitGroup): Wait
// returns at a moment when the count is zero.
package gogroup

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Group counts goroutines and pending delayed calls. The zero value is ready
// to use; a Group must not be copied after first use. All methods are safe
// for concurrent use.
type Group struct {
	n    atomic.Int64
	mu   sync.Mutex
	wake chan struct{} // closed when n reaches zero while Wait waits
}

// Go runs f on a new goroutine, counted until f returns.
func (g *Group) Go(f func()) {
	g.n.Add(1)
	go g.run(f) // arguments, not a closure: nothing to allocate
}

func (g *Group) run(f func()) {
	defer g.done()
	f()
}

// Enter counts a goroutine that the caller starts itself, with a go
// statement of its own (where passing Go a function value would cost an
// allocation, such as a method value made per call). That goroutine must
// call Leave when it ends, exactly once.
func (g *Group) Enter() { g.n.Add(1) }

// Leave ends the count of a goroutine counted with Enter.
func (g *Group) Leave() { g.done() }

// Timer is a delayed call scheduled with AfterFunc.
type Timer struct {
	g *Group
	t *time.Timer
}

// AfterFunc calls f on its own goroutine after d. The call is counted from
// now until it has returned, or until Stop cancels it.
func (g *Group) AfterFunc(d time.Duration, f func()) *Timer {
	g.n.Add(1)
	return &Timer{g: g, t: time.AfterFunc(d, func() {
		defer g.done()
		f()
	})}
}

// Stop cancels the call if it has not started, and reports whether it did.
// A nil Timer is stopped already.
func (t *Timer) Stop() bool {
	if t == nil || !t.t.Stop() {
		return false
	}
	t.g.done()
	return true
}

// Running returns how many goroutines and pending calls are counted.
func (g *Group) Running() int { return int(g.n.Load()) }

func (g *Group) done() {
	if g.n.Add(-1) != 0 {
		return
	}
	g.mu.Lock()
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
	g.mu.Unlock()
}

// Wait returns nil once no counted goroutine runs and no call is pending,
// or ctx's error when ctx ends first.
func (g *Group) Wait(ctx context.Context) error {
	for {
		g.mu.Lock()
		if g.n.Load() == 0 {
			g.mu.Unlock()
			return nil
		}
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		w := g.wake
		g.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Package netpoll tells when a connection has something to read, without a
// goroutine parked per connection: herald's idle connections then cost only
// their buffers-free state. On Linux it uses its own epoll instance in
// one-shot mode; elsewhere it falls back to one goroutine per connection.
//
// The protocol: Add registers a connection and a handler. When the
// connection becomes readable (data, EOF or error) the handler runs once on
// a goroutine of its own and is given the connection's Desc (it may run
// before Add has returned); it reads what it needs through the net.Conn as
// usual and then calls Resume on that Desc to be told about the next
// readiness, or Remove when it is done with the connection.
package netpoll

import (
	"errors"
	"sync"
	"syscall"
)

// ErrClosed is returned by Add after Close.
var ErrClosed = errors.New("netpoll: closed")

// Watch is one connection's registration with a Poller, for a connection
// that may end (Stop) before, while or after it is registered: Stop
// removes the registration whenever Start makes it, and Resume re-arms it
// only while the connection has not ended. The zero value is ready for
// Start; Start is called at most once.
type Watch struct {
	mu    sync.Mutex
	d     *Desc // nil before Start and once stopped
	ended bool  // Stop has run
}

// Start registers conn with p, fn to run on each readiness (see Add). An
// error means the connection cannot be watched.
func (w *Watch) Start(p *Poller, conn syscall.Conn, fn func(*Desc)) error {
	d, err := p.Add(conn, fn)
	if err != nil {
		return err
	}
	w.mu.Lock()
	ended := w.ended
	w.d = d
	w.mu.Unlock()
	if ended {
		d.Remove()
	}
	return nil
}

// Stop ends the watch: its registration is removed, now or as soon as
// Start has made it. It is idempotent.
func (w *Watch) Stop() {
	w.mu.Lock()
	d := w.d
	w.d = nil
	w.ended = true
	w.mu.Unlock()
	if d != nil {
		d.Remove()
	}
}

// Resume asks for the next readiness of d, the Desc a handler was given,
// unless the watch has stopped (Stop removes d).
func (w *Watch) Resume(d *Desc) error {
	w.mu.Lock()
	ended := w.ended
	w.mu.Unlock()
	if ended {
		return nil
	}
	return d.Resume()
}

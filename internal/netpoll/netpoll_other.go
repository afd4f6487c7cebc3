//go:build !linux || herald_portable

package netpoll

import (
	"context"
	"sync"
	"syscall"

	"github.com/herald-rt/herald/internal/gogroup"
)

// Poller is the portable fallback: one goroutine per connection, which runs
// the handler again each time it calls Resume (the handler's read blocks
// until data arrives).
type Poller struct {
	mu     sync.Mutex
	closed bool
	done   chan struct{}
	group  *gogroup.Group // counts the connections' goroutines; nil: none
}

// Desc is one registered connection.
type Desc struct {
	resume chan struct{}
	stop   chan struct{}
	once   sync.Once
}

// New creates a poller. Each connection's goroutine is counted in g (so
// that its owner can wait for them), unless g is nil.
func New(g *gogroup.Group) (*Poller, error) {
	return &Poller{done: make(chan struct{}), group: g}, nil
}

// Add registers conn; fn runs (with conn's Desc) each time after Add or
// Resume. Its first run may come before Add returns.
func (p *Poller) Add(_ syscall.Conn, fn func(*Desc)) (*Desc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	d := &Desc{resume: make(chan struct{}, 1), stop: make(chan struct{})}
	if p.group != nil {
		p.group.Enter()
	}
	go func() {
		if p.group != nil {
			defer p.group.Leave()
		}
		for {
			fn(d)
			select {
			case <-d.resume:
			case <-d.stop:
				return
			case <-p.done:
				return
			}
		}
	}()
	return d, nil
}

// Resume asks for the handler to run again.
func (d *Desc) Resume() error {
	select {
	case d.resume <- struct{}{}:
	default:
	}
	return nil
}

// Remove stops the connection's goroutine.
func (d *Desc) Remove() { d.once.Do(func() { close(d.stop) }) }

// Run waits until ctx is done or the poller is closed.
func (p *Poller) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-p.done:
	}
	return nil
}

// Close stops every connection goroutine.
func (p *Poller) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.done)
	}
	return nil
}

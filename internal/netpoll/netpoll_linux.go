//go:build linux

package netpoll

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/herald-rt/herald/internal/stack"
)

const events = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// Poller is an epoll instance with a dispatch loop. Methods are safe for
// concurrent use.
type Poller struct {
	epfd int

	mu      sync.Mutex
	next    uint64
	entries map[uint64]*Desc
	closed  bool
}

// Desc is one registered connection.
type Desc struct {
	p   *Poller
	id  uint64
	raw syscall.RawConn
	fn  func()
	// run serialises handler runs. One-shot readiness already prevents
	// overlap except for the instant between Resume and the handler's
	// return; the mutex closes that gap and orders the runs for the race
	// detector.
	run sync.Mutex
}

func (d *Desc) dispatch() {
	stack.Grow() // handlers read, decode and dispatch commands: a deep chain
	d.run.Lock()
	defer d.run.Unlock()
	d.fn()
}

// New creates a poller. Call Run to dispatch readiness.
func New() (*Poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create1: %w", err)
	}
	return &Poller{epfd: fd, entries: make(map[uint64]*Desc)}, nil
}

// Add registers conn; fn runs (on its own goroutine) each time conn is
// readable after Add or Resume.
func (p *Poller) Add(conn syscall.Conn, fn func()) (*Desc, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	p.next++
	d := &Desc{p: p, id: p.next, raw: raw, fn: fn}
	p.entries[d.id] = d
	p.mu.Unlock()
	if err := d.ctl(syscall.EPOLL_CTL_ADD); err != nil {
		d.Remove()
		return nil, err
	}
	return d, nil
}

// ctl applies op for the descriptor's fd. It runs inside RawConn.Control so
// the fd cannot be closed (and its number reused) meanwhile; on a closed
// connection it fails without touching anything.
func (d *Desc) ctl(op int) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(uint32(d.id)), Pad: int32(uint32(d.id >> 32))}
	var opErr error
	err := d.raw.Control(func(fd uintptr) {
		opErr = syscall.EpollCtl(d.p.epfd, op, int(fd), &ev)
	})
	if err != nil {
		return err
	}
	return opErr
}

// Resume asks for the next readiness notification.
func (d *Desc) Resume() error { return d.ctl(syscall.EPOLL_CTL_MOD) }

// Remove unregisters the connection. It is safe to call more than once and
// after the connection was closed (closing a socket leaves epoll by itself).
func (d *Desc) Remove() {
	d.p.mu.Lock()
	delete(d.p.entries, d.id)
	d.p.mu.Unlock()
	_ = d.raw.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(d.p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// Run dispatches readiness until ctx is done or the poller is closed.
func (p *Poller) Run(ctx context.Context) error {
	evs := make([]syscall.EpollEvent, 256)
	for ctx.Err() == nil {
		n, err := syscall.EpollWait(p.epfd, evs, 200)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("netpoll: epoll_wait: %w", err)
		}
		p.mu.Lock()
		for i := 0; i < n; i++ {
			id := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
			if d := p.entries[id]; d != nil {
				go d.dispatch()
			}
		}
		p.mu.Unlock()
	}
	return nil
}

// Close releases the epoll instance; Run returns.
func (p *Poller) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return syscall.Close(p.epfd)
}

//go:build linux && !herald_portable

package netpoll

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/herald-rt/herald/internal/gogroup"
	"github.com/herald-rt/herald/internal/stack"
)

const events = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// Poller is an epoll instance with a dispatch loop. Methods are safe for
// concurrent use.
//
// The epoll descriptor is itself non-blocking and registered with Go's own
// poller, and the loop waits for it there (a parked goroutine), then
// collects events with a non-blocking epoll_wait. A blocking epoll_wait
// would hold one of the runtime's Ps in a system call: under load the
// runtime's monitor thread takes it back, which wakes and parks threads on
// every wait.
type Poller struct {
	ep *os.File        // the epoll descriptor
	rc syscall.RawConn // of ep: ctl and wait go through it, so never on a closed descriptor

	mu      sync.Mutex
	next    uint64
	entries map[uint64]*Desc
	closed  bool

	ops   sync.Pool      // *ctlOp
	yield func()         // runtime.Gosched, after each batch of events
	group *gogroup.Group // counts handler runs' goroutines; nil: none
}

// Desc is one registered connection.
type Desc struct {
	p   *Poller
	id  uint64
	raw syscall.RawConn
	fn  func(*Desc)
	// run serialises handler runs. One-shot readiness already prevents
	// overlap except for the instant between Resume and the handler's
	// return; the mutex closes that gap and orders the runs for the race
	// detector.
	run sync.Mutex
}

// ctlOp is one epoll_ctl call's state, with its two Control callbacks bound
// once. The poller pools them, so that a call (a session makes one after
// every command, to re-arm) allocates nothing, and an idle connection's Desc
// carries none of it.
type ctlOp struct {
	d    *Desc
	op   int
	epfd uintptr
	err  error
	ev   syscall.EpollEvent
	onEp func(epfd uintptr)
	onFd func(fd uintptr)
}

func newCtlOp() any {
	o := &ctlOp{}
	o.onEp, o.onFd = o.withEpoll, o.withFd
	return o
}

// withEpoll runs inside the poller's Control with the epoll descriptor.
func (o *ctlOp) withEpoll(epfd uintptr) {
	o.epfd = epfd
	if err := o.d.raw.Control(o.onFd); err != nil {
		o.err = err
	}
}

// withFd runs inside the connection's Control, nested in withEpoll.
func (o *ctlOp) withFd(fd uintptr) {
	o.err = epollCtl(o.epfd, o.op, fd, &o.ev)
}

// epollCtl and epollWait are the system calls without the runtime's
// scheduler hand-off (syscall.Syscall's entersyscall/exitsyscall): neither
// blocks (the wait is always called with a zero timeout), and a thread seen
// in a system call has its P retaken by the runtime's sysmon.
func epollCtl(epfd uintptr, op int, fd uintptr, ev *syscall.EpollEvent) error {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, epfd, uintptr(op), fd, uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func epollWait(epfd uintptr, evs []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func (d *Desc) dispatch() {
	if g := d.p.group; g != nil {
		defer g.Leave()
	}
	stack.Grow() // handlers read, decode and dispatch commands: a deep chain
	d.run.Lock()
	defer d.run.Unlock()
	d.fn(d)
}

// New creates a poller. Call Run to dispatch readiness. Each handler run's
// goroutine is counted in g (so that its owner can wait for them), unless g
// is nil.
func New(g *gogroup.Group) (*Poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("netpoll: set non-blocking: %w", err)
	}
	ep := os.NewFile(uintptr(fd), "epoll")
	// Only a file in Go's poller takes deadlines: make sure this one is.
	if err := ep.SetReadDeadline(time.Time{}); err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("netpoll: epoll descriptor not in Go's poller: %w", err)
	}
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("netpoll: %w", err)
	}
	p := &Poller{ep: ep, rc: rc, entries: make(map[uint64]*Desc), yield: runtime.Gosched, group: g}
	p.ops.New = newCtlOp
	return p, nil
}

// Add registers conn; fn runs (on its own goroutine, with conn's Desc) each
// time conn is readable after Add or Resume. Its first run may come before
// Add returns.
func (p *Poller) Add(conn syscall.Conn, fn func(*Desc)) (*Desc, error) {
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

// ctl applies op for the descriptor's fd. It runs inside both descriptors'
// RawConn.Control, so neither can be closed (and its number reused)
// meanwhile; on a closed connection or poller it fails without touching
// anything.
func (d *Desc) ctl(op int) error {
	o := d.p.ops.Get().(*ctlOp)
	o.d, o.op, o.err = d, op, nil
	o.ev = syscall.EpollEvent{Events: events, Fd: int32(uint32(d.id)), Pad: int32(uint32(d.id >> 32))}
	err := d.p.rc.Control(o.onEp)
	if err == nil {
		err = o.err
	}
	o.d, o.err = nil, nil
	d.p.ops.Put(o)
	return err
}

// Resume asks for the next readiness notification.
func (d *Desc) Resume() error { return d.ctl(syscall.EPOLL_CTL_MOD) }

// Remove unregisters the connection. It is safe to call more than once and
// after the connection was closed (closing a socket leaves epoll by itself).
func (d *Desc) Remove() {
	d.p.mu.Lock()
	delete(d.p.entries, d.id)
	d.p.mu.Unlock()
	_ = d.ctl(syscall.EPOLL_CTL_DEL)
}

// Run dispatches readiness until ctx is done or the poller is closed.
func (p *Poller) Run(ctx context.Context) error {
	// Ending ctx wakes the wait below with a deadline in the past.
	stop := context.AfterFunc(ctx, func() { _ = p.ep.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	evs := make([]syscall.EpollEvent, 256)
	var n int
	var werr error
	collect := func(epfd uintptr) bool {
		n, werr = epollWait(epfd, evs)
		return n > 0 || werr != nil
	}
	for {
		// Parks in Go's poller until the epoll descriptor is readable. It is
		// edge-triggered there, so the loop parks only after an epoll_wait
		// found nothing.
		if err := p.rc.Read(collect); err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if ctx.Err() != nil || closed {
				return nil
			}
			return fmt.Errorf("netpoll: waiting for events: %w", err)
		}
		if werr != nil {
			if errors.Is(werr, syscall.EINTR) {
				continue
			}
			return fmt.Errorf("netpoll: epoll_wait: %w", werr)
		}
		p.mu.Lock()
		for i := 0; i < n; i++ {
			id := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
			if d := p.entries[id]; d != nil {
				if p.group != nil {
					p.group.Enter() // dispatch leaves
				}
				go d.dispatch()
			}
		}
		p.mu.Unlock()
		if n > 0 {
			// Let this batch's handlers run before collecting the next. A
			// ping round's pongs arrive in one burst: collecting batch
			// after batch first left thousands of handler goroutines
			// waiting at once (6.9k at 18k connections), each with its
			// stack, and the runtime keeps what a peak allocated.
			p.yield()
		}
	}
}

// Close releases the epoll instance; Run returns.
func (p *Poller) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.ep.Close()
}

//go:build linux && !386

package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// The epoll receive path (--reader epoll, the default on Linux): a
// connection's socket is raw and non-blocking from the start, never in Go's
// network poller, and belongs to one of a few receive loops, which also
// drive its setup (rxdial_linux.go). Each loop is one goroutine that owns a
// level-triggered epoll instance over raw non-blocking sockets: per readiness
// event it does one read(2) into the connection's buffer and parses every
// complete frame in it. A delivery then costs one read and no goroutine
// wake-up of its own, instead of a netpoller wake-up, a goroutine switch and
// a read that finds the socket empty (readLoop).
//
// The loop does not block in epoll_wait: a thread parked in a system call
// keeps the runtime's sysmon polling every 20 µs (it retakes the P, then
// watches for the next one), which cost more than the loop saved. Instead the
// epoll descriptor itself, readable whenever one of its sockets is, sits in
// Go's poller: the loop goroutine parks there, and on waking collects the
// ready sockets with a non-blocking epoll_wait, one wake-up per batch.

const (
	defaultReader  = "epoll"
	epollSupported = true
)

// rxState is a connection's receive state on the epoll path. After the
// hand-off it is touched only by the connection's loop, and by finish once
// the loops have stopped.
type rxState struct {
	fd      int    // the raw non-blocking socket
	buf     []byte // frames are parsed in buf[r:w]
	r, w    int
	deflate bool // permessage-deflate negotiated
	closed  bool // fd closed (dropped)
}

// rxLoop is one receive loop: a goroutine and its epoll instance.
type rxLoop struct {
	f    *localFleet
	epfd int
	ep   *os.File        // epfd, registered with Go's poller
	rc   syscall.RawConn // of ep: the loop waits in rc.Read
	wake [2]int          // pipe: a byte on wake[1] stops the loop
	out  rxOut
	err  error // why the loop stopped early (epoll_wait failed), for finish
}

// rxOut is what answering pings needs: a frame buffer and a mask generator.
type rxOut struct {
	wbuf []byte
	rng  uint64
}

// wakeData marks the wake pipe's events; connections carry their fleet index.
const wakeData = -1

// epollLoops is the number of receive loops of a fleet.
func epollLoops() int { return min(runtime.GOMAXPROCS(0), 2) }

// startLoops creates and starts the fleet's receive loops.
func (f *localFleet) startLoops() error {
	f.rx = make([]atomic.Pointer[bconn], f.spec.Count)
	for k := range epollLoops() {
		l, err := newRxLoop(f, k)
		if err != nil {
			f.stopLoops()
			return err
		}
		f.loops = append(f.loops, l)
		f.loopsDone.Add(1)
		go l.run()
	}
	return nil
}

func newRxLoop(f *localFleet, k int) (*rxLoop, error) {
	l := &rxLoop{f: f, wake: [2]int{-1, -1}, out: rxOut{rng: (uint64(time.Now().UnixNano()) + uint64(k)*0x9e3779b97f4a7c15) | 1}}
	var err error
	if l.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	if err := syscall.SetNonblock(l.epfd, true); err != nil {
		_ = syscall.Close(l.epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	l.ep = os.NewFile(uintptr(l.epfd), "epoll")
	// Only a file in Go's poller takes deadlines: make sure this one is.
	if err := l.ep.SetReadDeadline(time.Time{}); err != nil {
		l.closeFds()
		return nil, fmt.Errorf("epoll descriptor not in Go's poller: %w", err)
	}
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		l.closeFds()
		return nil, err
	}
	if err := syscall.Pipe2(l.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		l.closeFds()
		return nil, os.NewSyscallError("pipe2", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeData}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, l.wake[0], &ev); err != nil {
		l.closeFds()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return l, nil
}

// stopLoops wakes every loop, waits until all have returned and closes their
// descriptors. Afterwards finish owns every connection's rxState.
func (f *localFleet) stopLoops() {
	for _, l := range f.loops {
		_, _ = syscall.Write(l.wake[1], []byte{1})
	}
	f.loopsDone.Wait()
	for _, l := range f.loops {
		l.closeFds()
		if l.err != nil {
			f.mu.Lock()
			f.drops["receive loop: "+shortErr(l.err)]++
			f.mu.Unlock()
		}
	}
	f.loops = nil
}

func (l *rxLoop) closeFds() {
	for _, fd := range l.wake {
		if fd >= 0 {
			_ = syscall.Close(fd)
		}
	}
	_ = l.ep.Close()
}

// closeDetached sends a close frame (best effort: one non-blocking write)
// and closes bc's socket, unless it was dropped. finish calls it once the
// loops have stopped.
func (f *localFleet) closeDetached(bc *bconn, out *rxOut) {
	if bc.rx.closed {
		return
	}
	out.wbuf = appendMaskedFrame(out.wbuf[:0], ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""), nextRand(&out.rng))
	_, _ = rawWrite(bc.rx.fd, out.wbuf)
	bc.rx.closed = true
	_ = syscall.Close(bc.rx.fd)
}

// dropDetached closes a connection the server closed or broke, and counts
// it unless the fleet is stopping.
func (f *localFleet) dropDetached(bc *bconn, why string) {
	bc.rx.closed = true
	_ = syscall.Close(bc.rx.fd)
	if f.stopping.Load() {
		return
	}
	f.dropped.Add(1)
	f.mu.Lock()
	f.drops[why]++
	f.mu.Unlock()
}

// run is the loop: wait for readiness, service each ready connection once.
func (l *rxLoop) run() {
	defer l.f.loopsDone.Done()
	events := make([]syscall.EpollEvent, 256)
	var n int
	var werr error
	collect := func(uintptr) bool {
		n, werr = rawEpollWait(l.epfd, events)
		return n > 0 || werr != nil
	}
	for {
		// Parks in Go's poller until the epoll descriptor is readable. It
		// is edge-triggered there, so the loop parks only after an
		// epoll_wait found nothing.
		if err := l.rc.Read(collect); err != nil {
			l.err = err
			return
		}
		if werr == syscall.EINTR {
			continue
		}
		if werr != nil {
			l.err = os.NewSyscallError("epoll_wait", werr)
			return
		}
		for i := range n {
			k := events[i].Fd
			if k == wakeData {
				return
			}
			if bc := l.f.rx[k].Load(); bc != nil && !bc.rx.closed {
				if bc.setup != nil {
					l.advance(bc, events[i].Events)
				} else {
					l.service(bc)
				}
			}
		}
	}
}

// service does one read into bc's buffer and handles every complete frame.
func (l *rxLoop) service(bc *bconn) {
	rx := &bc.rx
	switch got, err := rx.fill(); {
	case got == readSome:
	case err != nil:
		l.f.dropDetached(bc, "read: "+shortErr(err))
		return
	case got == readEOF && rx.w > rx.r:
		l.f.dropDetached(bc, "read: "+shortErr(io.ErrUnexpectedEOF)) // as readFrame
		return
	case got == readEOF:
		l.f.dropDetached(bc, "read: EOF")
		return
	default:
		return // nothing yet
	}
	if why := l.f.frames(bc, &l.out); why != "" {
		l.f.dropDetached(bc, why)
	}
}

// What one read brought: bytes, nothing yet, or the end of the stream (a
// failed read is an error instead).
const (
	readNothing = iota
	readSome
	readEOF
)

// fill does one read into rx's buffer, growing it first when it is full
// (frames always leaves room; should it not, grow rather than spin).
func (rx *rxState) fill() (int, error) {
	if rx.w == len(rx.buf) {
		rx.buf = append(rx.buf, make([]byte, len(rx.buf))...)
	}
	n, err := rawRead(rx.fd, rx.buf[rx.w:])
	switch {
	case n > 0:
		rx.w += n
		return readSome, nil
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return readNothing, nil
	case err == nil:
		return readEOF, nil
	}
	return readNothing, err
}

// frames handles every complete frame in bc.rx.buf[r:w] as readLoop would,
// then moves what is left (the start of the next frame) to the front of the
// buffer, growing it when that frame will not fit. It returns a drop reason,
// or "".
func (f *localFleet) frames(bc *bconn, out *rxOut) string {
	rx := &bc.rx
	need := 0 // size of the incomplete frame at r, when its header is complete
	for rx.r < rx.w {
		h, err := parseFrameHeader(rx.buf[rx.r:rx.w], rx.deflate)
		if err != nil {
			return "read: " + shortErr(err)
		}
		end := rx.r + h.size
		if h.size == 0 || end > rx.w {
			need = h.size
			break
		}
		p := rx.buf[rx.r+h.hlen : end]
		rx.r = end
		// The setup's own frames (connected, the acks) are left out of the
		// byte counts, as on the goroutine path, which counts from its
		// reader on: the report's bytes are those read after subscribing.
		setup := bc.setup != nil
		if !setup {
			bc.wire += uint64(h.size)
		}
		switch h.op {
		case ws.OpText:
			if why := f.textFrame(bc, h, p, setup, out); why != "" {
				return why
			}
		case ws.OpPing:
			out.wbuf = appendMaskedFrame(out.wbuf[:0], ws.OpPong, p, nextRand(&out.rng))
			if n, err := writeFull(rx.fd, out.wbuf); err != nil && n > 0 {
				return "write: pong cut short: " + shortErr(err) // the stream is broken
			}
			// A pong not sent at all is left, as in readLoop, to the next
			// read to report.
		case ws.OpClose:
			return "close " + strconv.Itoa(closeCode(p))
		}
	}
	rx.compact(need)
	return ""
}

// compact moves what is left of the buffer (the start of the next frame) to
// its front, and grows the buffer when need, the size of that frame, will
// not fit.
func (rx *rxState) compact(need int) {
	if rx.r == rx.w {
		rx.r, rx.w = 0, 0
	} else if rx.r > 0 {
		rx.w = copy(rx.buf, rx.buf[rx.r:rx.w])
		rx.r = 0
	}
	if need > len(rx.buf) {
		nb := make([]byte, roundBuf(need))
		copy(nb, rx.buf[:rx.w])
		rx.buf = nb
	}
}

// textFrame handles text frame p (inflated first when compressed) as
// readLoop would; it returns a drop reason, or "".
func (f *localFleet) textFrame(bc *bconn, h frameHeader, p []byte, setup bool, out *rxOut) string {
	if !h.compressed {
		countText(bc, h, p, setup)
		return f.onText(bc, p, out)
	}
	inf := inflaters.Get().(*inflater)
	defer inflaters.Put(inf)
	m, err := inf.inflate(p, maxFrame)
	if err != nil {
		return "read: " + shortErr(fmt.Errorf("inflate: %w", err))
	}
	countText(bc, h, m, setup)
	return f.onText(bc, m, out)
}

// countText adds text frame m (inflated) to bc's byte counts: during the
// setup only a delivery racing the acks, as setup's countFrame does.
func countText(bc *bconn, h frameHeader, m []byte, setup bool) {
	if setup {
		if string(frameType(m)) != "message" {
			return
		}
		bc.wire += uint64(h.size)
	}
	bc.msgBytes += uint64(len(m))
	if h.compressed {
		bc.compressed++
	}
}

// onText handles a text frame: a delivery, or a step of the setup while
// there is one (see setupText). It returns a failure reason, or "".
func (f *localFleet) onText(bc *bconn, p []byte, out *rxOut) string {
	switch {
	case bc.setup != nil:
		return f.setupText(bc, p, out)
	case f.spec.SIOPath != "":
		_, why := f.sioLive(bc, p, out)
		return why
	}
	f.onMessage(bc, p)
	return ""
}

// roundBuf rounds a buffer size up to a multiple of 4 KiB.
func roundBuf(n int) int { return (n + 4095) &^ 4095 }

// writeFull writes b to a non-blocking socket, retrying briefly (≤ 5 ms)
// while the socket buffer is full: a control frame is tiny, so that is rare
// and short. It returns how much it wrote.
func writeFull(fd int, b []byte) (int, error) {
	written := 0
	for tries := 0; written < len(b); {
		n, err := rawWrite(fd, b[written:])
		if n > 0 {
			written += n
			continue
		}
		if err == syscall.EAGAIN || err == syscall.EINTR {
			if tries++; tries > 100 {
				return written, errors.New("socket send buffer full")
			}
			time.Sleep(50 * time.Microsecond)
			continue
		}
		if err == nil {
			err = io.ErrShortWrite
		}
		return written, err
	}
	return written, nil
}

// rawEpollWait collects ready events without waiting, as a raw system
// call (see rawRead).
func rawEpollWait(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawRead and rawWrite are read(2) and write(2) without the scheduler
// hand-off of syscall.Read and syscall.Write: the socket is non-blocking, so
// they never block.
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, syscall.EAGAIN
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// frameHeader is a parsed server frame header.
type frameHeader struct {
	op         ws.OpCode
	compressed bool // RSV1 (permessage-deflate)
	hlen       int  // header bytes
	size       int  // header + payload bytes; 0: the header is incomplete
}

// parseFrameHeader parses the header of the server frame at the start of b
// (RFC 6455 §5.2: unmasked, 2–10 bytes). size is 0 when b does not yet hold
// the whole header. Frames the bench reader does not accept are errors, as
// in readFrame.
func parseFrameHeader(b []byte, deflate bool) (frameHeader, error) {
	if len(b) < 2 {
		return frameHeader{}, nil
	}
	b0, b1 := b[0], b[1]
	op := ws.OpCode(b0 & 0x0f)
	if b1&0x80 != 0 {
		return frameHeader{}, errMaskedFrame
	}
	if b0&0x80 == 0 || op == ws.OpContinuation {
		return frameHeader{}, errFragmented
	}
	hlen, n := 2, uint64(b1&0x7f)
	switch n {
	case 126:
		if len(b) < 4 {
			return frameHeader{}, nil
		}
		hlen, n = 4, uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return frameHeader{}, nil
		}
		hlen, n = 10, binary.BigEndian.Uint64(b[2:])
	}
	if n > maxFrame {
		return frameHeader{}, errFrameTooLarge
	}
	rsv1 := b0&0x40 != 0
	switch {
	case b0&0x30 != 0:
		return frameHeader{}, errRSV23
	case rsv1 && !deflate:
		return frameHeader{}, errRSV1NoDeflate
	case rsv1 && op.IsControl():
		return frameHeader{}, wsflate.ErrUnexpectedCompressionBit
	}
	return frameHeader{op: op, compressed: rsv1, hlen: hlen, size: hlen + int(n)}, nil
}

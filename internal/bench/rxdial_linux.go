//go:build linux && !386

package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
)

// The epoll dial path: with the epoll reader, a connection is opened on a
// raw non-blocking socket and its whole setup — upgrade request, 101
// response, connected, subscribes, subscribed acks — is driven by its receive
// loop, like its deliveries later. Against dialing with net.Dialer, setting
// up on a goroutine and then moving the socket out of Go's poller, this
// saves the runtime poller's registration and removal, the descriptor's
// duplication, getsockname/getpeername/getsockopt and a goroutine wake-up
// per response (what that saves per connect: docs/performance.md).
//
// Ownership: the dialer creates the socket and registers it; from then on
// only the loop touches the connection (and closes the socket when the setup
// fails) until the setup ends, which it reports once on done. A dialer that
// stops waiting (timeout, cancel) marks the setup abandoned instead; the
// loop then closes the socket at its next event, or finish does.

const (
	setupRunning   int32 = iota
	setupEnded           // by the loop, which sent the outcome on done
	setupAbandoned       // by the dialer, which counted the failure itself
)

// rxSetup is a connection's setup in progress on the epoll dial path.
type rxSetup struct {
	req       []byte // the part of the upgrade request still to write
	check     upgradeCheck
	upgraded  bool // the 101 response was read
	connected bool // the connected frame was read and the subscribes sent
	chans     []string
	acked     int
	sio       sioSetup // a Socket.IO subscriber's setup
	state     atomic.Int32
	done      chan error // the loop's outcome, once (buffered)
}

// connectRaw opens connection First+i on the epoll dial path and waits for
// its setup to end.
func (f *localFleet) connectRaw(ctx context.Context, i int) {
	idx := f.spec.First + i
	start := time.Now()
	rng := (uint64(idx)*0x9e3779b97f4a7c15 + uint64(start.UnixNano())) | 1
	key := wsKey(&rng)
	st := &rxSetup{
		check: upgradeCheck{want: acceptKey(key[:]), compress: f.spec.Compress},
		chans: f.spec.channelsOf(idx),
		done:  make(chan error, 1),
	}
	t := f.targetFor(st.chans)
	if f.spec.SIOPath != "" {
		t = sioTarget(f.target, f.spec.SIOPath)
	}
	st.req = appendUpgradeRequest(make([]byte, 0, 256+len(f.tokens[i])), t, key[:], f.tokens[i], f.spec.Compress)

	fd, err := rawConnect(f.target.hostPort, f.localFor(idx))
	if err != nil {
		f.connectFailed(&dialError{err: err})
		return
	}
	// On loopback the handshake is usually complete when connect returns:
	// write the request now and spare the loop a writability event.
	events := uint32(syscall.EPOLLIN | syscall.EPOLLRDHUP)
	switch n, err := rawWrite(fd, st.req); {
	case err == nil:
		st.req = st.req[n:]
	case err != syscall.EAGAIN && err != syscall.EINTR:
		_ = syscall.Close(fd)
		f.connectFailed(&dialError{err: os.NewSyscallError("write", err)})
		return
	}
	if len(st.req) > 0 {
		events |= syscall.EPOLLOUT
	}
	bc := &bconn{idx: idx, stream: f.spec.streamOf(idx), setup: st,
		rx: rxState{fd: fd, buf: make([]byte, f.spec.ReadBuffer)}}
	f.mu.Lock()
	if f.stopping.Load() {
		f.mu.Unlock()
		_ = syscall.Close(fd)
		return
	}
	if err := f.register(bc, i, events); err != nil {
		f.mu.Unlock()
		_ = syscall.Close(fd)
		f.connectFailed(err)
		return
	}
	f.mu.Unlock()

	timer := time.NewTimer(time.Until(start.Add(f.spec.ConnectTimeout)))
	defer timer.Stop()
	select {
	case err = <-st.done:
	case <-timer.C:
		err = st.abandon(&dialError{err: os.ErrDeadlineExceeded})
	case <-ctx.Done():
		err = st.abandon(&dialError{err: ctx.Err()})
	}
	if err != nil {
		f.connectFailed(err)
		return
	}
	f.conn.record(idx, time.Since(start).Microseconds())
	f.keep(bc, st.check.deflate, false) // when stopping, finish closes it
}

// abandon stops waiting for the setup, which then fails with err, unless
// the loop ended it meanwhile: then its outcome counts.
func (st *rxSetup) abandon(err error) error {
	if st.state.CompareAndSwap(setupRunning, setupAbandoned) {
		return err
	}
	return <-st.done
}

// rawConnect starts a non-blocking TCP connect to hostPort (a loopback
// address, as parseTarget checked) from local (nil: any).
func rawConnect(hostPort string, local net.IP) (int, error) {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return -1, err
	}
	ip := net.ParseIP(host)
	p, err := strconv.Atoi(port)
	if ip == nil || !ip.IsLoopback() || err != nil {
		return -1, fmt.Errorf("%w: %q", errNotLoopback, hostPort)
	}
	// Raw system calls (none of them blocks on a non-blocking socket): an
	// ordinary one wakes the runtime's sysmon whenever the scheduler was
	// idle just before, and connect(2) on loopback runs the whole
	// handshake inside the call (docs/performance.md, the generator).
	sa, salen, family := rawSockaddr(ip, p)
	r, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family), syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, os.NewSyscallError("socket", e)
	}
	fd := int(r)
	fail := func(call string, err error) (int, error) {
		_ = syscall.Close(fd)
		return -1, os.NewSyscallError(call, err)
	}
	// Small frames either way; as net.Dial does, so no write waits for an ACK.
	one := int32(1)
	if _, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0); e != 0 {
		return fail("setsockopt", e)
	}
	if l4 := local.To4(); l4 != nil && family == syscall.AF_INET {
		la, lalen, _ := rawSockaddr(l4, 0)
		if _, _, e := syscall.RawSyscall(syscall.SYS_BIND, uintptr(fd), uintptr(la), lalen); e != 0 {
			return fail("bind", e)
		}
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(sa), salen); e != 0 && e != syscall.EINPROGRESS && e != syscall.EINTR {
		return fail("connect", e)
	}
	return fd, nil
}

// rawSockaddr is ip:port as bind(2) and connect(2) take it, with its
// length and address family.
func rawSockaddr(ip net.IP, port int) (unsafe.Pointer, uintptr, int) {
	if ip4 := ip.To4(); ip4 != nil {
		sa := &syscall.RawSockaddrInet4{Family: syscall.AF_INET}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], uint16(port))
		copy(sa.Addr[:], ip4)
		return unsafe.Pointer(sa), syscall.SizeofSockaddrInet4, syscall.AF_INET
	}
	sa := &syscall.RawSockaddrInet6{Family: syscall.AF_INET6}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], uint16(port))
	copy(sa.Addr[:], ip.To16())
	return unsafe.Pointer(sa), syscall.SizeofSockaddrInet6, syscall.AF_INET6
}

// register adds bc (fleet index i) to its loop for events. The caller
// holds f.mu and has checked that the fleet is not stopping.
func (f *localFleet) register(bc *bconn, i int, events uint32) error {
	f.rx[i].Store(bc)
	l := f.loops[i%len(f.loops)]
	ev := syscall.EpollEvent{Events: events, Fd: int32(i)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, bc.rx.fd, &ev); err != nil {
		f.rx[i].Store(nil)
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// advance moves bc's setup on after a readiness event (events).
func (l *rxLoop) advance(bc *bconn, events uint32) {
	st := bc.setup
	if st.state.Load() == setupAbandoned {
		l.endSetup(bc, nil)
		return
	}
	if len(st.req) > 0 {
		l.sendRequest(bc, events)
		return // the response cannot be there before the request
	}
	if !l.readResponse(bc) {
		return
	}
	if why := l.f.frames(bc, &l.out); why != "" {
		if bc.setup == nil { // it ended with the last ack, then the rest broke
			l.f.dropDetached(bc, why)
			return
		}
		l.endSetup(bc, setupFailure(why))
	}
}

// sendRequest writes what is left of the upgrade request when the socket
// takes it, then waits for the response.
func (l *rxLoop) sendRequest(bc *bconn, events uint32) {
	st, rx := bc.setup, &bc.rx
	if events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
		return
	}
	n, err := rawWrite(rx.fd, st.req)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return
	case err != nil:
		l.endSetup(bc, &dialError{err: os.NewSyscallError("write", err)})
		return
	}
	if st.req = st.req[n:]; len(st.req) > 0 {
		return
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(bc.idx - l.f.spec.First)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, rx.fd, &ev); err != nil {
		l.endSetup(bc, os.NewSyscallError("epoll_ctl", err))
	}
}

// readResponse reads what the socket has and takes the upgrade response's
// head once it is complete; true when frames may follow in the buffer.
func (l *rxLoop) readResponse(bc *bconn) bool {
	st, rx := bc.setup, &bc.rx
	if !st.upgraded && rx.w == len(rx.buf) {
		l.endSetup(bc, &dialError{err: fmt.Errorf("upgrade response head larger than %d bytes", len(rx.buf))})
		return false
	}
	switch got, err := rx.fill(); {
	case got == readSome:
	case err != nil:
		l.endSetup(bc, &dialError{err: os.NewSyscallError("read", err)})
		return false
	case got == readEOF:
		l.endSetup(bc, &dialError{err: fmt.Errorf("connection closed during the setup: %w", io.ErrUnexpectedEOF)})
		return false
	default:
		return false // nothing yet
	}
	if st.upgraded {
		return true
	}
	k := bytes.Index(rx.buf[rx.r:rx.w], []byte("\r\n\r\n"))
	if k < 0 {
		return false
	}
	head := rx.buf[rx.r : rx.r+k+2] // every line with its CRLF
	rx.r += k + 4
	if err := st.response(head, rx.buf[rx.r:rx.w]); err != nil {
		l.endSetup(bc, err)
		return false
	}
	st.upgraded = true
	rx.deflate = st.check.deflate
	return true
}

// response checks an upgrade response's head (status line and headers, each
// line ending in CRLF). rest is what followed it: for a refusal, the start
// of the body.
func (st *rxSetup) response(head, rest []byte) error {
	line, head, _ := bytes.Cut(head, []byte("\r\n"))
	status, ok := parseStatusLine(line)
	if !ok {
		return &dialError{err: fmt.Errorf("malformed upgrade response status line %.60q", line)}
	}
	if status != http.StatusSwitchingProtocols {
		body := strings.TrimSpace(string(rest[:min(len(rest), 256)]))
		return &dialError{status: status, body: body, err: fmt.Errorf("unexpected HTTP status %d", status)}
	}
	for len(head) > 0 {
		line, head, _ = bytes.Cut(head, []byte("\r\n"))
		if err := st.check.header(line); err != nil {
			return err
		}
	}
	return st.check.result()
}

// setupText handles a text frame that arrives during bc's setup: the
// connected frame (answered with the subscribes), then the acks; the last
// one ends the setup. It returns a failure reason, or "".
func (f *localFleet) setupText(bc *bconn, p []byte, out *rxOut) string {
	st := bc.setup
	if f.spec.SIOPath != "" {
		return f.sioSetupText(bc, p, out)
	}
	typ := string(frameType(p))
	if !st.connected {
		if typ != "connected" {
			return fmt.Sprintf("first frame is not connected: %.100q", p)
		}
		st.connected = true
		if f.spec.SubscribeInURL {
			return "" // the subscribed replies follow in the same write
		}
		out.wbuf = out.wbuf[:0]
		var cmd []byte
		for _, ch := range st.chans {
			cmd = appendSubscribe(cmd[:0], ch, nil)
			out.wbuf = appendMaskedFrame(out.wbuf, ws.OpText, cmd, nextRand(&out.rng))
		}
		if _, err := writeFull(bc.rx.fd, out.wbuf); err != nil {
			return "subscribe: " + shortErr(err)
		}
		return ""
	}
	switch typ {
	case "subscribed":
		if st.acked++; st.acked < len(st.chans) {
			return ""
		}
		return endSetupOK(bc)
	case "error":
		return "subscribe refused: " + string(stringField(p, "code"))
	case "message":
		f.onMessage(bc, p)
	}
	return ""
}

// endSetupOK ends bc's setup, subscribed; it returns a failure reason
// when its dialer stopped waiting.
func endSetupOK(bc *bconn) string {
	st := bc.setup
	if !st.state.CompareAndSwap(setupRunning, setupEnded) {
		return "abandoned by its dialer"
	}
	bc.setup = nil // from here on a live connection
	st.done <- nil
	return ""
}

// sioSetupText is setupText for a Socket.IO subscriber (sioSetup), its
// pings and deliveries handled as onText does.
func (f *localFleet) sioSetupText(bc *bconn, p []byte, out *rxOut) string {
	if handled, why := f.sioLive(bc, p, out); handled {
		return why
	}
	send, done, err := bc.setup.sio.step(p, bc.setup.chans)
	if err != nil {
		return err.Error()
	}
	if len(send) > 0 {
		out.wbuf = out.wbuf[:0]
		for _, pkt := range send {
			out.wbuf = appendMaskedFrame(out.wbuf, ws.OpText, pkt, nextRand(&out.rng))
		}
		if _, err := writeFull(bc.rx.fd, out.wbuf); err != nil {
			return "subscribe: " + shortErr(err)
		}
	}
	if done {
		return endSetupOK(bc)
	}
	return ""
}

// sioLive handles a Socket.IO subscriber's ping (answered) or delivery;
// handled is false for any other packet.
func (f *localFleet) sioLive(bc *bconn, p []byte, out *rxOut) (handled bool, why string) {
	doc, ping := sioPacket(p)
	switch {
	case ping:
		out.wbuf = appendMaskedFrame(out.wbuf[:0], ws.OpText, sioPong, nextRand(&out.rng))
		if n, err := writeFull(bc.rx.fd, out.wbuf); err != nil && n > 0 {
			return true, "write: pong cut short: " + shortErr(err)
		}
		return true, ""
	case doc != nil:
		f.onMessage(bc, doc)
		return true, ""
	}
	return false, ""
}

// setupFailure turns a frames() reason during a setup into its error.
func setupFailure(why string) error {
	if code, ok := strings.CutPrefix(why, "close "); ok {
		return fmt.Errorf("closed by server while subscribing: %s", code)
	}
	return errors.New(why)
}

// endSetup ends bc's setup with err: its socket is closed, and err goes to
// the dialer unless it has stopped waiting.
func (l *rxLoop) endSetup(bc *bconn, err error) {
	bc.rx.closed = true
	_ = syscall.Close(bc.rx.fd)
	if st := bc.setup; st.state.CompareAndSwap(setupRunning, setupEnded) {
		st.done <- err
	}
}

// closeSetups closes the sockets of connections still in setup, or left by
// dialers that stopped waiting: every registered one not closed yet. finish
// calls it once the loops have stopped and the fleet's connections are
// closed.
func (f *localFleet) closeSetups() {
	for i := range f.rx {
		if bc := f.rx[i].Load(); bc != nil && !bc.rx.closed {
			bc.rx.closed = true
			_ = syscall.Close(bc.rx.fd)
		}
	}
}

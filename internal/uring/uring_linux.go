//go:build linux && !herald_portable

// Package uring submits many socket writes in one system call with Linux's
// io_uring. herald's writer pool uses it to write one publication to many
// clients: at a few messages per subscriber per second nothing can be
// batched per socket, so without it every delivery is its own writev.
//
// It is the small part of io_uring the writer pool needs — a ring, sends and
// sendmsgs flagged MSG_DONTWAIT, one submit-and-reap step — written against
// the kernel's ABI (no io_uring module is served by the Go module proxy
// here). A Ring is used by one goroutine at a time.
//
// Every request is non-blocking: with MSG_DONTWAIT the kernel completes it
// while submitting (a socket that cannot take it answers -EAGAIN rather than
// being polled in the background), so Submit returns with every result and
// no buffer is in the kernel's hands afterwards.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"
)

const (
	sysSetup = 425
	sysEnter = 426

	opNop     = 0
	opSendmsg = 9
	opSend    = 26

	enterGetEvents = 1 << 0

	setupSubmitAll   = 1 << 7 // go on submitting after a request fails
	setupCoopTaskrun = 1 << 8 // no interrupting task work: completions are reaped here

	featSingleMmap = 1 << 0
	featNoDrop     = 1 << 1

	offSQRing = 0
	offSQEs   = 0x10000000

	sendFlags = syscall.MSG_DONTWAIT | syscall.MSG_NOSIGNAL
)

// ErrUnsupported is returned by New when the kernel has no usable io_uring
// (too old, disabled by sysctl kernel.io_uring_disabled, or refused by a
// seccomp filter, as container runtimes' default profiles do).
var ErrUnsupported = errors.New("io_uring unavailable")

type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sq                                                                     sqRingOffsets
	cq                                                                     cqRingOffsets
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode, flags         uint8
	ioprio                uint16
	fd                    int32
	off, addr             uint64
	len, opFlags          uint32
	userData              uint64
	bufIndex, personality uint16
	spliceFdIn            int32
	addr3, pad            uint64
}

// cqe is struct io_uring_cqe (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// Ring is one io_uring instance: a submission queue of Entries requests
// and a completion queue twice as long.
type Ring struct {
	fd       int
	ringMem  []byte
	sqeMem   []byte
	sqTail   *uint32
	sqMask   uint32
	sqes     []sqe
	cqHead   *uint32
	cqTail   *uint32
	cqMask   uint32
	cqes     []cqe
	entries  int
	prepared int
}

// New sets up a ring for up to entries requests per Submit (rounded up to
// a power of two by the kernel). It returns ErrUnsupported (wrapped) when
// the kernel will not give one — among others on kernels before 5.19, which
// do not know IORING_SETUP_SUBMIT_ALL and IORING_SETUP_COOP_TASKRUN: this
// package is meant for, and tested on, kernels that complete a
// MSG_DONTWAIT send while submitting it, and older ones are better served by
// writev than by finding out.
func New(entries int) (*Ring, error) {
	if entries < 1 || entries > 4096 {
		return nil, fmt.Errorf("uring: %d entries: want 1..4096", entries)
	}
	var p params
	p.flags = setupSubmitAll | setupCoopTaskrun
	fd, _, e := syscall.Syscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %v", ErrUnsupported, e)
	}
	r := &Ring{fd: int(fd)}
	if err := r.mmap(&p); err != nil {
		_ = r.Close()
		return nil, err
	}
	if err := r.probe(); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return r, nil
}

// probe submits one no-op and checks that it completes. A seccomp profile
// can allow io_uring_setup and refuse io_uring_enter; found out here, the
// writer pool uses writev from the start instead of failing its first
// batch.
func (r *Ring) probe() error {
	*r.next() = sqe{opcode: opNop}
	res := []int32{notFilled}
	if err := r.Submit(res); err != nil {
		return err
	}
	if res[0] != 0 {
		return fmt.Errorf("io_uring no-op: result %d", res[0])
	}
	return nil
}

// notFilled marks the probe's result before the kernel fills it.
const notFilled = -1 << 31

func (r *Ring) mmap(p *params) error {
	if p.features&featSingleMmap == 0 || p.features&featNoDrop == 0 {
		// Not on a kernel that took the flags above; checked all the same.
		return fmt.Errorf("%w: kernel too old (features %#x)", ErrUnsupported, p.features)
	}
	size := max(int(p.sq.array)+int(p.sqEntries)*4, int(p.cq.cqes)+int(p.cqEntries)*int(unsafe.Sizeof(cqe{})))
	var err error
	if r.ringMem, err = syscall.Mmap(r.fd, offSQRing, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		return fmt.Errorf("%w: mmap ring: %v", ErrUnsupported, err)
	}
	if r.sqeMem, err = syscall.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		return fmt.Errorf("%w: mmap sqes: %v", ErrUnsupported, err)
	}
	base := unsafe.Pointer(&r.ringMem[0])
	r.sqTail = (*uint32)(unsafe.Add(base, p.sq.tail))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.sq.ringMask))
	r.cqHead = (*uint32)(unsafe.Add(base, p.cq.head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cq.tail))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cq.ringMask))
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(base, p.cq.cqes)), p.cqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	// The indirection array maps ring slot i to sqe i, once and for all.
	array := unsafe.Slice((*uint32)(unsafe.Add(base, p.sq.array)), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.entries = int(p.sqEntries)
	return nil
}

// Close releases the ring.
func (r *Ring) Close() error {
	if r.sqeMem != nil {
		_ = syscall.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.ringMem != nil {
		_ = syscall.Munmap(r.ringMem)
		r.ringMem = nil
	}
	if r.fd < 0 {
		return nil
	}
	err := syscall.Close(r.fd)
	r.fd = -1
	return err
}

// Entries is the most requests one Submit takes.
func (r *Ring) Entries() int { return r.entries }

// Prepared is how many requests wait for Submit.
func (r *Ring) Prepared() int { return r.prepared }

func (r *Ring) next() *sqe {
	if r.prepared == r.entries {
		panic("uring: more requests prepared than the ring holds")
	}
	tail := atomic.LoadUint32(r.sqTail) + uint32(r.prepared)
	r.prepared++
	return &r.sqes[tail&r.sqMask]
}

// PrepSend queues a send of buf (not empty) to socket fd, tagged tag. buf
// must stay alive and unchanged until Submit returns.
func (r *Ring) PrepSend(fd int, buf []byte, tag uint64) {
	*r.next() = sqe{
		opcode: opSend, fd: int32(fd),
		addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(buf)))), len: uint32(len(buf)),
		opFlags: sendFlags, userData: tag,
	}
}

// PrepSendmsg queues a sendmsg of iov (not empty) to socket fd, tagged
// tag, with msg as its header: msg is overwritten to name iov (no address or
// control data). msg, iov and their buffers must stay alive and unchanged
// until Submit returns.
func (r *Ring) PrepSendmsg(fd int, msg *syscall.Msghdr, iov []syscall.Iovec, tag uint64) {
	*msg = syscall.Msghdr{Iov: &iov[0]}
	setLen(&msg.Iovlen, len(iov))
	*r.next() = sqe{
		opcode: opSendmsg, fd: int32(fd),
		addr: uint64(uintptr(unsafe.Pointer(msg))), len: 1,
		opFlags: sendFlags, userData: tag,
	}
}

// ErrNotSubmitted (wrapped, with the errno) is Submit's error when the
// kernel did not take part of the submission: every request it took has its
// result, the others were not made and are left unfilled. When Retryable
// says so (the kernel was short of memory) the ring can be used again; any
// other errno (a seccomp profile refusing io_uring_enter, say) means it will
// not take the next submission either, though nothing is in the kernel's
// hands. Any error from Submit that is not ErrNotSubmitted means the ring can
// no longer be trusted: requests may still be in the kernel's hands, and the
// caller should Close it and stop using the buffers it named.
var ErrNotSubmitted = errors.New("io_uring refused the submission")

// Retryable reports whether err, from Submit, left the ring usable: the
// kernel refused the submission for want of memory for the moment.
func Retryable(err error) bool {
	return errors.Is(err, ErrNotSubmitted) && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EBUSY))
}

// Submit hands the prepared requests to the kernel and waits for their
// completions. res[tag] receives each request's result: bytes sent, or a
// negated errno (-EAGAIN when the socket could not take any of it). Tags must
// index res. Results Submit did not fill are left as they were.
//
// The kernel completes these requests while submitting them, so the call
// does not block and is made with RawSyscall: a thread in an ordinary system
// call wakes the runtime's sysmon, which then retakes the P of a writer that
// submits back to back (see the writer pool). A request that did not
// complete inline — none should — is waited for with an ordinary system call.
func (r *Ring) Submit(res []int32) error {
	n := r.prepared
	if n == 0 {
		return nil
	}
	atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)+uint32(n))
	r.prepared = 0
	submitted := 0
	for submitted < n {
		m, _, e := syscall.RawSyscall6(sysEnter, uintptr(r.fd), uintptr(n-submitted), 0, 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e == 0 && m == 0 {
			e = syscall.EAGAIN // took nothing and said nothing: do not spin
		}
		if e != 0 {
			// The kernel took none of what remains (EAGAIN, EBUSY): take it
			// back, and wait for what is in flight.
			r.discard(n - submitted)
			if err := r.reap(res, submitted); err != nil {
				return err
			}
			return fmt.Errorf("%w: io_uring_enter: %w", ErrNotSubmitted, e)
		}
		submitted += int(m)
	}
	return r.reap(res, n)
}

// discard takes k unsubmitted requests back off the submission queue.
func (r *Ring) discard(k int) {
	atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)-uint32(k))
}

// reap collects want completions into res, waiting in an ordinary system
// call for any not yet posted.
func (r *Ring) reap(res []int32, want int) error {
	got := 0
	for {
		head := atomic.LoadUint32(r.cqHead)
		tail := atomic.LoadUint32(r.cqTail)
		for ; head != tail; head++ {
			c := &r.cqes[head&r.cqMask]
			if c.userData < uint64(len(res)) {
				res[c.userData] = c.res
			}
			got++
		}
		atomic.StoreUint32(r.cqHead, head)
		if got >= want {
			return nil
		}
		_, _, e := syscall.Syscall6(sysEnter, uintptr(r.fd), 0, uintptr(want-got), enterGetEvents, 0, 0)
		if e != 0 && e != syscall.EINTR {
			return fmt.Errorf("uring: waiting for completions: %w", e)
		}
	}
}

// setLen sets a length field whose width is the architecture's (Msghdr's
// Iovlen is 64 bits wide on 64-bit Linux, 32 on 32-bit).
func setLen[T ~uint32 | ~uint64](field *T, n int) { *field = T(n) }

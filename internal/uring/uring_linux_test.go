//go:build linux && !herald_portable

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/herald-rt/herald/internal/seccomptest"
	"github.com/herald-rt/herald/internal/testnet"
)

func newRing(t *testing.T, entries int) *Ring {
	t.Helper()
	r, err := New(entries)
	if errors.Is(err, ErrUnsupported) && os.Getenv("HERALD_REQUIRE_IO_URING") == "" {
		// Elsewhere the writer pool falls back to writev, which the hub's
		// tests cover. CI's machine has io_uring and sets the variable, so
		// there this fails instead.
		t.Skipf("no io_uring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSubmitManySockets: one Submit writes to many sockets, sends and
// sendmsgs mixed, each result in its tag's slot, each peer reading exactly
// its own bytes.
func TestSubmitManySockets(t *testing.T) {
	r := newRing(t, 64)
	const n = 40
	peers := make([]*net.TCPConn, n)
	want := make([][]byte, n)
	msgs := make([]syscall.Msghdr, n)
	iovs := make([][2]syscall.Iovec, n)
	for i := range n {
		srv, peer := testnet.TCPPair(t)
		peers[i] = peer
		a := bytes.Repeat([]byte{byte('a' + i%26)}, 10+i)
		if i%2 == 0 {
			want[i] = a
			r.PrepSend(testnet.FD(t, srv), a, uint64(i))
			continue
		}
		b := []byte("-second-part")
		want[i] = append(append([]byte{}, a...), b...)
		iovs[i] = [2]syscall.Iovec{{Base: &a[0]}, {Base: &b[0]}}
		iovs[i][0].SetLen(len(a))
		iovs[i][1].SetLen(len(b))
		r.PrepSendmsg(testnet.FD(t, srv), &msgs[i], iovs[i][:], uint64(i))
	}
	if r.Prepared() != n {
		t.Fatalf("Prepared = %d, want %d", r.Prepared(), n)
	}
	res := make([]int32, n)
	if err := r.Submit(res); err != nil {
		t.Fatal(err)
	}
	if r.Prepared() != 0 {
		t.Fatalf("Prepared after Submit = %d", r.Prepared())
	}
	for i := range n {
		if int(res[i]) != len(want[i]) {
			t.Fatalf("socket %d: result %d, want %d", i, res[i], len(want[i]))
		}
		if got := readN(t, peers[i], len(want[i])); !bytes.Equal(got, want[i]) {
			t.Fatalf("socket %d read %q, want %q", i, got, want[i])
		}
	}
	// The ring is reusable, many times over its size.
	for round := range 5 * r.Entries() / n {
		for i := range n {
			r.PrepSend(testnet.FD(t, peers[i]), want[i][:1], uint64(i))
		}
		if err := r.Submit(res); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for i := range n {
			if res[i] != 1 {
				t.Fatalf("round %d, socket %d: result %d", round, i, res[i])
			}
		}
	}
}

// TestSubmitFullSocket: a socket that cannot take the data answers -EAGAIN
// at once (it is not polled in the background), a partial send reports what
// went out, and the other requests of the same Submit are done.
func TestSubmitFullSocket(t *testing.T) {
	r := newRing(t, 8)
	full, fullPeer := testnet.TCPPair(t)
	ok, okPeer := testnet.TCPPair(t)
	_ = full.SetWriteBuffer(4096)
	_ = fullPeer.SetReadBuffer(4096)
	chunk := make([]byte, 1<<16)
	res := make([]int32, 2)
	var sent int
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatal("the socket never filled")
		}
		r.PrepSend(testnet.FD(t, full), chunk, 0)
		if err := r.Submit(res); err != nil {
			t.Fatal(err)
		}
		if res[0] == -int32(syscall.EAGAIN) {
			break
		}
		if res[0] <= 0 {
			t.Fatalf("send %d: result %d", i, res[0])
		}
		sent += int(res[0])
	}
	start := time.Now()
	r.PrepSend(testnet.FD(t, full), chunk, 0)
	r.PrepSend(testnet.FD(t, ok), []byte("hello"), 1)
	if err := r.Submit(res); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second { // waiting would be forever: a failure bound, not a measure
		t.Fatalf("Submit waited %v for a full socket", d)
	}
	if res[0] != -int32(syscall.EAGAIN) || res[1] != 5 {
		t.Fatalf("results %v, want [-EAGAIN 5]", res)
	}
	if got := readN(t, okPeer, 5); string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	// What the full socket took is all there, and nothing more.
	go func() { _, _ = io.CopyN(io.Discard, fullPeer, int64(sent)) }()
	_ = fullPeer.SetReadDeadline(time.Now().Add(10 * time.Second))
}

// TestSubmitErrors: a closed peer gives -EPIPE or -ECONNRESET (and no
// SIGPIPE), a bad descriptor -EBADF, and neither stops the requests after
// it.
func TestSubmitErrors(t *testing.T) {
	r := newRing(t, 4)
	dead, deadPeer := testnet.TCPPair(t)
	good, goodPeer := testnet.TCPPair(t)
	_ = deadPeer.SetLinger(0)
	deadPeer.Close()
	time.Sleep(50 * time.Millisecond) // the RST arrives
	res := make([]int32, 3)
	r.PrepSend(testnet.FD(t, dead), []byte("x"), 0)
	r.PrepSend(1<<30, []byte("x"), 1)
	r.PrepSend(testnet.FD(t, good), []byte("ok"), 2)
	if err := r.Submit(res); err != nil {
		t.Fatal(err)
	}
	if e := syscall.Errno(-res[0]); e != syscall.EPIPE && e != syscall.ECONNRESET {
		t.Fatalf("closed peer: result %d", res[0])
	}
	if res[1] != -int32(syscall.EBADF) {
		t.Fatalf("bad descriptor: result %d", res[1])
	}
	if res[2] != 2 {
		t.Fatalf("good socket: result %d", res[2])
	}
	if got := readN(t, goodPeer, 2); string(got) != "ok" {
		t.Fatalf("read %q", got)
	}
}

func TestNewRejectsSizes(t *testing.T) {
	for _, n := range []int{0, -1, 5000} {
		if r, err := New(n); err == nil {
			r.Close()
			t.Fatalf("New(%d) succeeded", n)
		}
	}
}

func TestPrepareBeyondEntriesPanics(t *testing.T) {
	r := newRing(t, 2)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	for range r.Entries() + 1 {
		r.PrepSend(0, []byte("x"), 0)
	}
}

// TestLayout: the structs the kernel reads and writes have its sizes.
func TestLayout(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"io_uring_sqe", unsafe.Sizeof(sqe{}), 64},
		{"io_uring_cqe", unsafe.Sizeof(cqe{}), 16},
		{"io_uring_params", unsafe.Sizeof(params{}), 120},
		{"io_sqring_offsets", unsafe.Sizeof(sqRingOffsets{}), 40},
		{"io_cqring_offsets", unsafe.Sizeof(cqRingOffsets{}), 40},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.got, c.want)
		}
	}
}

// TestEnterDenied: where a seccomp profile lets a ring be made but refuses
// io_uring_enter, New says io_uring is unsupported (its no-op probe
// fails), and a ring made before the refusal answers Submit with
// ErrNotSubmitted, the errno, not Retryable, and its requests unmade.
func TestEnterDenied(t *testing.T) {
	if !seccomptest.Child(t) {
		seccomptest.Run(t)
		return
	}
	r := newRing(t, 4)
	srv, peer := testnet.TCPPair(t)
	seccomptest.Deny(t, sysEnter)
	if r2, err := New(4); !errors.Is(err, ErrUnsupported) {
		if r2 != nil {
			r2.Close()
		}
		t.Fatalf("New with io_uring_enter refused: %v, want ErrUnsupported", err)
	}
	res := []int32{7}
	r.PrepSend(testnet.FD(t, srv), []byte("x"), 0)
	err := r.Submit(res)
	if !errors.Is(err, ErrNotSubmitted) || !errors.Is(err, syscall.EPERM) || Retryable(err) {
		t.Fatalf("Submit: %v, want ErrNotSubmitted with EPERM, not retryable", err)
	}
	if res[0] != 7 || r.Prepared() != 0 {
		t.Fatalf("result %d, %d prepared: want the request unmade and gone", res[0], r.Prepared())
	}
	_ = peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := peer.Read(make([]byte, 1)); n != 0 {
		t.Fatal("the refused send was made")
	}
}

func TestRetryable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w: io_uring_enter: %w", ErrNotSubmitted, syscall.EAGAIN), true},
		{fmt.Errorf("%w: io_uring_enter: %w", ErrNotSubmitted, syscall.EBUSY), true},
		{fmt.Errorf("%w: io_uring_enter: %w", ErrNotSubmitted, syscall.EPERM), false},
		{syscall.EAGAIN, false},
		{nil, false},
	} {
		if got := Retryable(c.err); got != c.want {
			t.Errorf("Retryable(%v) = %v", c.err, got)
		}
	}
}

//go:build unix

// Command floor measures what this machine's kernel and Go runtime need for
// herald's two hardest benchmark targets with no herald in the way, so the
// numbers in docs/performance.md can be read against a floor measured on the
// same machine:
//
//	floor fanout  [--conns 10000] [--rounds 20] [--size 199] [--writers 2] [--write raw|uring|go] [--batch 128] [--reader epoll|goroutine]
//	floor connect [--conns 10000] [--concurrency 128] [--round-trips 2|1]
//
// fanout: one process writes --size bytes to each of --conns loopback
// sockets, one write system call per socket, with --writers goroutines,
// every 200 ms — by default (--write raw) a bare write(2), as herald's writer
// pool makes its writev without io_uring, not net.Conn.Write (--write go),
// whose system call goes through the runtime's scheduler hand-off; --write
// uring makes --batch sends per io_uring submission, as herald's writer pool
// does where the kernel allows; a second process (this binary again) reads them as the bench
// generator does: by default (--reader epoll) with two epoll loops over raw
// sockets, one read per readiness event; --reader goroutine uses one
// goroutine per socket. It reports the time one round takes (the last socket
// written), the delivery latency and the CPU per delivery of each side.
//
// connect: the second process opens --conns connections with --concurrency
// dialers (from source addresses 127.0.0.1–8 in turn on Linux, as herald
// bench does) and, on each, exchanges what a herald connect exchanges (a
// 300-byte request, a 279-byte answer, a 60-byte subscribe, a 100-byte
// reply; with --round-trips 1, as when herald bench subscribes in the
// upgrade request, a 320-byte request and a 379-byte answer); the first
// process accepts and answers. It reports connections per second and
// the CPU per connection of each side.
//
// Only 127.0.0.1 is used: the first process listens on 127.0.0.1:0 and tells
// the second the port.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/herald-rt/herald/internal/uring"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

type options struct {
	conns, rounds, size, writers, concurrency int
	roundTrips, batch                         int
	addr, reader, write                       string
	interval                                  time.Duration
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: floor fanout|connect [flags] (floor fanout --help)")
	}
	mode := args[0]
	fs := flag.NewFlagSet("floor "+mode, flag.ContinueOnError)
	var o options
	fs.IntVar(&o.conns, "conns", 10000, "loopback connections (at most 18000: one process holds ~19k sockets here)")
	fs.IntVar(&o.rounds, "rounds", 20, "fanout: rounds, one every --interval")
	fs.DurationVar(&o.interval, "interval", 200*time.Millisecond, "fanout: time from one round's start to the next (herald bench --rate R is 1/R)")
	fs.IntVar(&o.size, "size", 199, "fanout: bytes per write (199 = herald's frame for a 100-byte payload)")
	fs.IntVar(&o.writers, "writers", 2, "fanout: writing goroutines (herald's writer pool has GOMAXPROCS)")
	fs.IntVar(&o.concurrency, "concurrency", 128, "connect: concurrent dialers")
	fs.IntVar(&o.roundTrips, "round-trips", 2, "connect: 2 (request and answer, then subscribe and reply, as herald bench connect) or 1 (the subscription named in the request, as herald bench connect --subscribe-in-url)")
	fs.StringVar(&o.write, "write", "raw", "fanout: how the first process writes: raw (write(2) without the runtime's system-call hand-off, as herald's writer pool without io_uring), uring (--batch sends per io_uring submission, as herald's writer pool) or go (net.Conn.Write)")
	fs.IntVar(&o.batch, "batch", 128, "fanout: with --write uring, sends per submission (herald's writer pool makes 128)")
	fs.StringVar(&o.reader, "reader", defaultReader, "fanout: how the second process reads: epoll (two epoll loops over raw sockets, the bench generator's default on Linux) or goroutine (one goroutine per socket)")
	fs.StringVar(&o.addr, "addr", "", "(internal) the first process's address, for the second")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if o.conns < 1 || o.conns > 18000 || o.rounds < 1 || o.interval <= 0 || o.size < 1 || o.writers < 1 || o.concurrency < 1 {
		return errors.New("--conns must be 1..18000 and --rounds, --size, --writers, --concurrency positive")
	}
	if o.reader != "goroutine" && (o.reader != "epoll" || !epollSupported) {
		return fmt.Errorf("--reader %q: want goroutine or (on Linux) epoll", o.reader)
	}
	if o.roundTrips != 1 && o.roundTrips != 2 {
		return fmt.Errorf("--round-trips %d: want 1 or 2", o.roundTrips)
	}
	if o.write != "raw" && o.write != "go" && o.write != "uring" {
		return fmt.Errorf("--write %q: want raw, uring or go", o.write)
	}
	if o.batch < 1 || o.batch > 4096 {
		return errors.New("--batch must be 1..4096")
	}
	switch mode {
	case "fanout", "connect":
		return parent(mode, o, out)
	case "fanout-reader":
		return fanoutReader(o, out)
	case "connect-dialer":
		return connectDialer(o, out)
	}
	return fmt.Errorf("unknown mode %q (want fanout or connect)", mode)
}

// cpu is this process's user+system CPU time.
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// parent listens, starts the second process and runs its side of mode.
func parent(mode string, o options, out io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(exe, mode+map[string]string{"fanout": "-reader", "connect": "-dialer"}[mode],
		"--addr", ln.Addr().String(), "--conns", strconv.Itoa(o.conns), "--size", strconv.Itoa(o.size), "--concurrency", strconv.Itoa(o.concurrency), "--reader", o.reader,
		"--round-trips", strconv.Itoa(o.roundTrips))
	child.Stderr = os.Stderr
	childOut, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	var report string
	if mode == "fanout" {
		report, err = fanoutWriter(ln, o)
	} else {
		report, err = connectAcceptor(ln, o)
	}
	if err != nil {
		return err
	}
	lines, _ := io.ReadAll(childOut)
	_ = child.Wait()
	fmt.Fprintf(out, "%s%s", report, lines)
	return nil
}

func acceptAll(ln net.Listener, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for len(conns) < n {
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			return conns, fmt.Errorf("accept (%d of %d): %w", len(conns), n, err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func fanoutWriter(ln net.Listener, o options) (string, error) {
	conns, err := acceptAll(ln, o.conns)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	if err != nil {
		return "", err
	}
	time.Sleep(300 * time.Millisecond) // the readers are parked
	// With --write raw or uring each socket's RawConn, taken once; nil
	// writes with net.Conn.Write.
	rcs := make([]syscall.RawConn, len(conns))
	if o.write != "go" {
		for i, c := range conns {
			if sc, ok := c.(syscall.Conn); ok {
				if rcs[i], err = sc.SyscallConn(); err != nil {
					return "", err
				}
			}
		}
	}
	msg := make([]byte, max(o.size, 8))[:o.size]
	// With --write uring each writer's ring, and every socket's descriptor
	// (the sockets stay open for the whole run).
	var rings []*uring.Ring
	var fds []int
	if o.write == "uring" {
		for range o.writers {
			r, err := uring.New(o.batch)
			if err != nil {
				return "", err
			}
			defer r.Close()
			rings = append(rings, r)
		}
		for _, rc := range rcs {
			if err := rc.Control(func(fd uintptr) { fds = append(fds, int(fd)) }); err != nil {
				return "", err
			}
		}
	}
	rounds := make([]time.Duration, 0, o.rounds)
	c0 := cpu()
	for r := 0; r < o.rounds; r++ {
		t0 := time.Now()
		if o.size >= 8 {
			binary.LittleEndian.PutUint64(msg, uint64(t0.UnixNano())) // the reader's latency origin
		}
		var wg sync.WaitGroup
		var failed atomic.Int64
		per := (len(conns) + o.writers - 1) / o.writers
		for lo := 0; lo < len(conns); lo += per {
			hi := min(lo+per, len(conns))
			wg.Add(1)
			if rings != nil {
				go func(r *uring.Ring, fds []int) {
					defer wg.Done()
					if sendAll(r, fds, msg) != nil {
						failed.Add(1)
					}
				}(rings[lo/per], fds[lo:hi])
				continue
			}
			go func(part []net.Conn, rcs []syscall.RawConn) {
				defer wg.Done()
				w := newSockWriter(o.write == "raw", msg)
				for i, c := range part {
					if err := w.write(c, rcs[i]); err != nil {
						failed.Add(1)
					}
				}
			}(conns[lo:hi], rcs[lo:hi])
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			return "", fmt.Errorf("round %d: %d writes failed", r, n)
		}
		d := time.Since(t0)
		rounds = append(rounds, d)
		time.Sleep(o.interval - d)
	}
	used := cpu() - c0
	slices.Sort(rounds)
	var sum time.Duration
	for _, d := range rounds {
		sum += d
	}
	deliveries := time.Duration(o.rounds * o.conns)
	return fmt.Sprintf("fanout floor: %d sockets × %d rounds of %d bytes every %v, %d writers (--write %s)\n"+
		"round (last socket written)  mean %v  p50 %v  max %v\n"+
		"writer CPU per delivery      %v\n",
		o.conns, o.rounds, o.size, o.interval, o.writers, o.write,
		(sum / time.Duration(len(rounds))).Round(100*time.Microsecond), rounds[len(rounds)/2].Round(100*time.Microsecond),
		rounds[len(rounds)-1].Round(100*time.Microsecond), (used / deliveries).Round(10*time.Nanosecond)), nil
}

// sendAll writes msg to every socket in fds with sends of ring.Entries()
// per submission. A socket that cannot take it all is an error here: a
// round's one small message per socket always fits.
func sendAll(ring *uring.Ring, fds []int, msg []byte) error {
	res := make([]int32, ring.Entries())
	for len(fds) > 0 {
		part := fds[:min(len(fds), ring.Entries())]
		fds = fds[len(part):]
		for i, fd := range part {
			ring.PrepSend(fd, msg, uint64(i))
		}
		if err := ring.Submit(res); err != nil {
			return err
		}
		for _, r := range res[:len(part)] {
			if int(r) != len(msg) {
				return fmt.Errorf("send: result %d", r)
			}
		}
	}
	return nil
}

// sockWriter writes one message to a socket at a time; each writing
// goroutine has its own.
type sockWriter struct {
	raw   bool
	msg   []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) // w.writeFd, bound once
}

func newSockWriter(raw bool, msg []byte) *sockWriter {
	w := &sockWriter{raw: raw, msg: msg}
	w.fn = w.writeFd
	return w
}

// write writes w.msg to c. The raw way is one write(2) on c's non-blocking
// socket, called as syscall.RawSyscall: the runtime does not see the thread
// in a system call, so its sysmon does not wake every 20 µs to retake the P.
// What the socket cannot take at once (never, with a round's one small
// message per socket) goes through c.Write.
func (w *sockWriter) write(c net.Conn, rc syscall.RawConn) error {
	if !w.raw || rc == nil {
		_, err := c.Write(w.msg)
		return err
	}
	w.n, w.errno = 0, 0
	if err := rc.Control(w.fn); err != nil {
		return err
	}
	switch {
	case w.errno == syscall.EAGAIN:
		w.n = 0
	case w.errno != 0:
		return w.errno
	}
	if w.n < len(w.msg) {
		_, err := c.Write(w.msg[w.n:])
		return err
	}
	return nil
}

func (w *sockWriter) writeFd(fd uintptr) {
	for {
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.msg[0])), uintptr(len(w.msg)))
		if e != syscall.EINTR {
			w.n, w.errno = int(m), e
			return
		}
	}
}

// fanoutReader is the second process of fanout: it reads every socket until
// the writer closes it and reports the latencies it saw.
func fanoutReader(o options, out io.Writer) error {
	c0 := cpu()
	var got int64
	var lats [][]time.Duration
	var err error
	if o.reader == "epoll" {
		got, lats, err = epollReader(o, func() { c0 = cpu() })
	} else {
		got, lats, err = goroutineReader(o, func() { c0 = cpu() })
	}
	if err != nil {
		return err
	}
	msgs := got / int64(o.size)
	per := time.Duration(0)
	if msgs > 0 {
		per = (cpu() - c0) / time.Duration(msgs)
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	q := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(p*float64(len(all))))].Round(100 * time.Microsecond)
	}
	fmt.Fprintf(out, "reader CPU per delivery      %v (%d messages, --reader %s)\n", per.Round(10*time.Nanosecond), msgs, o.reader)
	if len(all) > 0 {
		fmt.Fprintf(out, "delivery latency             p50 %v  p99 %v  max %v (received − round start)\n", q(0.5), q(0.99), all[len(all)-1].Round(100*time.Microsecond))
	}
	return nil
}

// goroutineReader reads the fanout with one goroutine per socket (the bench
// generator's --reader goroutine). connected is called once every socket is
// connected, before the first read. It returns the bytes read and, per
// socket, the latencies it saw.
func goroutineReader(o options, connected func()) (int64, [][]time.Duration, error) {
	conns := make([]net.Conn, 0, o.conns)
	for range o.conns {
		c, err := net.Dial("tcp", o.addr)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return 0, nil, err
		}
		conns = append(conns, c)
	}
	connected()
	var got atomic.Int64
	var wg sync.WaitGroup
	lats := make([][]time.Duration, len(conns)) // per socket: receive time − round start
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]byte, 4096)
			var pending int // bytes of a message cut by the previous read
			for {
				n, err := c.Read(buf)
				got.Add(int64(n))
				stamps(&lats[i], &pending, buf[:n], o.size)
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return got.Load(), lats, nil
}

// stamps records the latency of every message whose start is in b, one
// read from a socket: each size-byte message begins with its round's start
// time (with size ≥ 8). pending is the socket's count of bytes of a message
// cut by the previous read.
func stamps(lats *[]time.Duration, pending *int, b []byte, size int) {
	if size < 8 || len(b) == 0 {
		return
	}
	now := time.Now().UnixNano()
	for off := (size - *pending) % size; off+8 <= len(b); off += size {
		*lats = append(*lats, time.Duration(now-int64(binary.LittleEndian.Uint64(b[off:]))))
	}
	*pending = (*pending + len(b)) % size
}

// connectExchange is what a herald connect puts on the wire, in order, by
// round trips: the upgrade request, the 101 response with the connected
// frame, the subscribe, the subscribed reply; or the request naming the
// channel, and the 101 with connected and subscribed.
var connectExchange = map[int][]int{2: {300, 279, 60, 100}, 1: {320, 379}}

// exchange plays one side of connectExchange[trips] on c: the dialing side
// writes the request (and the subscribe) and reads the answers, the
// accepting side the other way round.
func exchange(c net.Conn, dialing bool, trips int) error {
	buf := make([]byte, 512)
	for i, n := range connectExchange[trips] {
		var err error
		if (i%2 == 0) == dialing {
			_, err = c.Write(buf[:n])
		} else {
			_, err = io.ReadFull(c, buf[:n])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func connectAcceptor(ln net.Listener, o options) (string, error) {
	var done sync.WaitGroup
	var keep sync.Mutex
	var conns []net.Conn
	var failed atomic.Int64
	c0 := cpu()
	var t0 time.Time
	for i := 0; i < o.conns; i++ {
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			return "", fmt.Errorf("accept (%d of %d): %w", i, o.conns, err)
		}
		if i == 0 {
			t0, c0 = time.Now(), cpu()
		}
		done.Add(1)
		go func() {
			defer done.Done()
			if err := exchange(c, false, o.roundTrips); err != nil {
				failed.Add(1)
				return
			}
			keep.Lock()
			conns = append(conns, c)
			keep.Unlock()
		}()
	}
	done.Wait()
	d, used := time.Since(t0), cpu()-c0
	for _, c := range conns {
		_ = c.Close()
	}
	if n := failed.Load(); n > 0 {
		return "", fmt.Errorf("%d connections failed", n)
	}
	return fmt.Sprintf("connect floor: %d connections, %d round trip(s) each\n"+
		"accepting side               %.0f connections/s, CPU per connection %v\n",
		o.conns, o.roundTrips, float64(o.conns)/d.Seconds(), (used / time.Duration(o.conns)).Round(100*time.Nanosecond)), nil
}

// dialer is connection i's dialer: on Linux it rotates through source
// addresses 127.0.0.1–8, as herald bench does (one address runs short of
// the ephemeral ports connect(2) prefers at about 15,000 connections).
func dialer(i int) *net.Dialer {
	d := &net.Dialer{KeepAlive: -1}
	if runtime.GOOS == "linux" {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%8))}
	}
	return d
}

// connectDialer is the second process of connect.
func connectDialer(o options, out io.Writer) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	var firstErr atomic.Value
	c0, t0 := cpu(), time.Now()
	for range min(o.concurrency, o.conns) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(o.conns) {
					return
				}
				c, err := dialer(int(i)).Dial("tcp", o.addr)
				if err == nil {
					err = exchange(c, true, o.roundTrips)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	d, used := time.Since(t0), cpu()-c0
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	fmt.Fprintf(out, "dialing side                 %.0f connections/s, CPU per connection %v\n",
		float64(o.conns)/d.Seconds(), (used / time.Duration(o.conns)).Round(100*time.Nanosecond))
	for _, c := range conns {
		_ = c.Close()
	}
	return nil
}

//go:build linux && !386

package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

func TestParseFrameHeader(t *testing.T) {
	hdr := func(b ...byte) []byte { return b }
	long := binary.BigEndian.AppendUint64([]byte{0x81, 127}, 70000)
	for name, c := range map[string]struct {
		b       []byte
		deflate bool
		want    frameHeader
		err     error
	}{
		"empty":           {b: nil},
		"one byte":        {b: hdr(0x81)},
		"short text":      {b: hdr(0x81, 5), want: frameHeader{op: ws.OpText, hlen: 2, size: 7}},
		"empty ping":      {b: hdr(0x89, 0), want: frameHeader{op: ws.OpPing, hlen: 2, size: 2}},
		"16-bit partial":  {b: hdr(0x81, 126, 1)},
		"16-bit":          {b: hdr(0x81, 126, 1, 0), want: frameHeader{op: ws.OpText, hlen: 4, size: 4 + 256}},
		"64-bit partial":  {b: long[:9]},
		"64-bit":          {b: long, want: frameHeader{op: ws.OpText, hlen: 10, size: 10 + 70000}},
		"compressed":      {b: hdr(0xc1, 3), deflate: true, want: frameHeader{op: ws.OpText, compressed: true, hlen: 2, size: 5}},
		"masked":          {b: hdr(0x81, 0x85), err: errMaskedFrame},
		"fragment":        {b: hdr(0x01, 5), err: errFragmented},
		"continuation":    {b: hdr(0x80, 5), err: errFragmented},
		"too large":       {b: binary.BigEndian.AppendUint64([]byte{0x81, 127}, maxFrame+1), err: errFrameTooLarge},
		"huge":            {b: binary.BigEndian.AppendUint64([]byte{0x81, 127}, 1<<63), err: errFrameTooLarge},
		"rsv2":            {b: hdr(0xa1, 1), err: errRSV23},
		"rsv3":            {b: hdr(0x91, 1), deflate: true, err: errRSV23},
		"rsv1 no deflate": {b: hdr(0xc1, 1), err: errRSV1NoDeflate},
		"compressed ping": {b: hdr(0xc9, 1), deflate: true, err: wsflate.ErrUnexpectedCompressionBit},
	} {
		h, err := parseFrameHeader(c.b, c.deflate)
		if !errors.Is(err, c.err) || h != c.want {
			t.Errorf("%s: %+v %v, want %+v %v", name, h, err, c.want, c.err)
		}
	}
}

// socketPair returns a connected pair of non-blocking stream sockets.
func socketPair(t testing.TB) (ours, peer int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

func testFleet() *localFleet {
	return &localFleet{lat: newShardedHist(), conn: newShardedHist(), drops: map[string]int{}, errorFrames: map[string]int{}, errs: map[string]int{}, subs: []int{0}}
}

// readClientFrame reads one masked client frame from fd and returns its
// opcode and unmasked payload.
func readClientFrame(t *testing.T, fd int) (ws.OpCode, []byte) {
	t.Helper()
	buf := make([]byte, 512)
	n, err := syscall.Read(fd, buf)
	if err != nil {
		t.Fatalf("no client frame: %v", err)
	}
	h, err := ws.ReadHeader(bytes.NewReader(buf[:n]))
	if err != nil || !h.Masked || !h.Fin {
		t.Fatalf("client frame header %+v %v", h, err)
	}
	p := buf[ws.HeaderSize(h):n]
	if int64(len(p)) != h.Length {
		t.Fatalf("client frame of %d bytes, header says %d", len(p), h.Length)
	}
	ws.Cipher(p, h.Mask, 0)
	return h.OpCode, p
}

// TestEpollFrames feeds a stream of server frames to the epoll path in chunks
// of every size from 1 byte (so that headers and payloads split everywhere)
// and checks what it counted, the pong it wrote and how it dropped the
// connection at the close frame.
func TestEpollFrames(t *testing.T) {
	m1 := messageFrame(1, 100)
	ping := serverFrame(ws.OpPing, []byte("are you there"))
	m2 := messageFrame(2, 10000) // larger than the 4 KiB buffer
	p3 := deliveryPayload(3, 2000)
	m3 := compressedFrame(t, p3, false)
	m4 := messageFrame(4, 300)
	m5 := messageFrame(5, 70000) // 64-bit length
	errFrame := serverFrame(ws.OpText, []byte(`{"type":"error","code":"rate_limited"}`))
	closeF := serverFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye"))
	var stream []byte
	for _, f := range [][]byte{m1, ping, m2, m3, m4, m5, errFrame, closeF} {
		stream = append(stream, f...)
	}
	msgBytes := len(p3)
	for _, m := range [][]byte{m1, m2, m4, m5, errFrame} {
		h, _ := parseFrameHeader(m, false)
		msgBytes += len(m) - h.hlen
	}

	for _, chunk := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		ours, peer := socketPair(t)
		f := testFleet()
		bc := &bconn{rx: rxState{fd: ours, buf: make([]byte, 4096), deflate: true}}
		l := &rxLoop{f: f, out: rxOut{rng: 1}}
		for off := 0; off < len(stream) && !bc.rx.closed; off += chunk {
			if _, err := syscall.Write(peer, stream[off:min(off+chunk, len(stream))]); err != nil {
				t.Fatal(err)
			}
			// Level-triggered: the loop services the socket while it is
			// readable, one read each time.
			for !bc.rx.closed && readable(t, ours) > 0 {
				l.service(bc)
			}
		}
		if !bc.rx.closed || f.drops["close 1001"] != 1 || f.dropped.Load() != 1 {
			t.Fatalf("chunk %d: closed %v drops %v", chunk, bc.rx.closed, f.drops)
		}
		if bc.tr.received != 5 || bc.tr.reordered != 0 || bc.unparsed != 0 || f.errorFrames["rate_limited"] != 1 {
			t.Fatalf("chunk %d: received %d reordered %d unparsed %d errors %v", chunk, bc.tr.received, bc.tr.reordered, bc.unparsed, f.errorFrames)
		}
		if bc.wire != uint64(len(stream)) || bc.msgBytes != uint64(msgBytes) || bc.compressed != 1 {
			t.Fatalf("chunk %d: wire %d (want %d) messages %d (want %d) compressed %d", chunk, bc.wire, len(stream), bc.msgBytes, msgBytes, bc.compressed)
		}
		if op, p := readClientFrame(t, peer); op != ws.OpPong || string(p) != "are you there" {
			t.Fatalf("chunk %d: answered %v %q", chunk, op, p)
		}
		if _, err := syscall.Write(peer, []byte{1}); err == nil {
			t.Fatalf("chunk %d: our socket is still open", chunk)
		}
	}
}

// readable returns how many bytes wait in fd's receive queue.
func readable(t *testing.T, fd int) int {
	var n int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	return int(n)
}

func TestEpollDrops(t *testing.T) {
	masked := serverFrame(ws.OpText, []byte("x"))
	masked[1] |= 0x80
	rsv1 := serverFrame(ws.OpText, []byte("x"))
	rsv1[0] |= 0x40
	garbage := serverFrame(ws.OpText, bytes.Repeat([]byte{0xff}, 64))
	garbage[0] |= 0x40
	for name, c := range map[string]struct {
		stream  []byte
		deflate bool
		eof     bool
		gone    bool // the peer shuts down both directions
		want    string
	}{
		// The pong fails with nothing written: as readLoop, the read
		// reports.
		"ping to a gone peer": {stream: serverFrame(ws.OpPing, []byte("x")), gone: true, want: "read: EOF"},
		"eof":                 {stream: messageFrame(1, 100), eof: true, want: "read: EOF"},
		"eof mid-frame":       {stream: messageFrame(1, 100)[:50], eof: true, want: "read: unexpected EOF"},
		"masked":              {stream: masked, want: "read: protocol error: masked frame from ser"},
		"fragmented":          {stream: []byte{0x01, 1, 'x'}, want: "read: fragmented frame from server (not suppor"},
		"rsv1 no deflate":     {stream: rsv1, want: "read: protocol error: compressed (RSV1) fra"},
		"bad deflate":         {stream: garbage, deflate: true, want: "read: inflate: "},
		"too large":           {stream: binary.BigEndian.AppendUint64([]byte{0x81, 127}, maxFrame+1), want: "read: frame exceeds 16777216 bytes"},
		"close":               {stream: serverFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusPolicyViolation, "")), want: "close 1008"},
		"close no code":       {stream: serverFrame(ws.OpClose, nil), want: "close 1005"},
	} {
		ours, peer := socketPair(t)
		f := testFleet()
		bc := &bconn{rx: rxState{fd: ours, buf: make([]byte, 4096), deflate: c.deflate}}
		l := &rxLoop{f: f, out: rxOut{rng: 1}}
		_, _ = syscall.Write(peer, c.stream)
		if c.eof {
			_ = syscall.Shutdown(peer, syscall.SHUT_WR)
		}
		if c.gone {
			_ = syscall.Shutdown(peer, syscall.SHUT_RDWR)
		}
		for range 3 {
			if !bc.rx.closed {
				l.service(bc)
			}
		}
		if len(f.drops) != 1 || f.dropped.Load() != 1 || !bc.rx.closed {
			t.Fatalf("%s: drops %v", name, f.drops)
		}
		for why := range f.drops {
			if !strings.HasPrefix(why, c.want) {
				t.Errorf("%s: dropped as %q, want %q", name, why, c.want)
			}
		}
	}
	// While the fleet stops, a close is not a drop.
	ours, peer := socketPair(t)
	f := testFleet()
	f.stopping.Store(true)
	bc := &bconn{rx: rxState{fd: ours, buf: make([]byte, 4096)}}
	_ = syscall.Shutdown(peer, syscall.SHUT_WR)
	(&rxLoop{f: f}).service(bc)
	if !bc.rx.closed || len(f.drops) != 0 || f.dropped.Load() != 0 {
		t.Fatalf("drop while stopping: %v", f.drops)
	}
}

// TestEpollLoopsStop: loops start, serve registered connections, and stop
// and close everything in finish without leaking goroutines.
func TestEpollLoopsStop(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	f := testFleet()
	f.epoll = true
	f.spec.Count = 4
	if err := f.startLoops(); err != nil {
		t.Fatal(err)
	}
	peers := make([]int, 4)
	for i := range 4 {
		ours, peer := socketPair(t)
		peers[i] = peer
		bc := &bconn{idx: i, rx: rxState{fd: ours, buf: make([]byte, 4096)}}
		f.mu.Lock()
		if err := f.register(bc, i, syscall.EPOLLIN|syscall.EPOLLRDHUP); err != nil {
			t.Fatal(err)
		}
		f.conns = append(f.conns, bc)
		f.mu.Unlock()
	}
	for i, p := range peers {
		_, _ = syscall.Write(p, messageFrame(uint64(i), 100))
	}
	deadline := time.Now().Add(2 * time.Second)
	for f.progress().Delivered < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	res, err := f.finish(finishMsg{Published: []uint64{4}, Failed: []uint64{0}})
	if err != nil || res.Delivered != 4 || len(f.loops) != 0 {
		t.Fatalf("delivered %d, loops %d: %v", res.Delivered, len(f.loops), err)
	}
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Fatalf("%d goroutines left, %d before", n, goroutines)
	}
	// Each peer got a close frame, then EOF.
	for _, p := range peers {
		if op, _ := readClientFrame(t, p); op != ws.OpClose {
			t.Fatalf("got %v, want a close frame", op)
		}
		if n, err := syscall.Read(p, make([]byte, 16)); n != 0 || err != nil {
			t.Fatalf("after close: %d %v", n, err)
		}
	}
}

// epollBenchStream is n message frames with 100-byte payloads.
func epollBenchStream(n int) []byte {
	var stream []byte
	for i := range n {
		stream = append(stream, messageFrame(uint64(i), 100)...)
	}
	return stream
}

// TestEpollFramesAllocs: parsing and handling frames on the epoll path
// allocates nothing.
func TestEpollFramesAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	stream := epollBenchStream(16)
	f := testFleet()
	bc := &bconn{rx: rxState{fd: -1, buf: make([]byte, 4096)}}
	out := rxOut{rng: 1}
	var seq uint64
	allocs := testing.AllocsPerRun(200, func() {
		bc.rx.w = copy(bc.rx.buf, stream)
		if why := f.frames(bc, &out); why != "" || bc.rx.w != 0 {
			t.Fatal(why)
		}
		seq += 16
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per 16 frames", allocs)
	}
	if bc.tr.received == 0 {
		t.Fatal("nothing received")
	}
}

// BenchmarkEpollParse is the epoll path's per-frame work without the system
// calls: parse a header, scan seq and t, record latency and sequence. (Each
// iteration copies one frame into the buffer, as read would.)
func BenchmarkEpollParse(b *testing.B) {
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = messageFrame(uint64(i), 100)
	}
	f := testFleet()
	bc := &bconn{rx: rxState{fd: -1, buf: make([]byte, 4096)}}
	out := rxOut{rng: 1}
	b.ReportAllocs()
	b.SetBytes(int64(len(frames[0])))
	for i := 0; b.Loop(); i++ {
		bc.rx.w = copy(bc.rx.buf, frames[i%len(frames)])
		if why := f.frames(bc, &out); why != "" {
			b.Fatal(why)
		}
	}
}

// BenchmarkEpollService is one delivery through a socket: the peer writes a
// frame, service reads and handles it (one read system call).
func BenchmarkEpollService(b *testing.B) {
	ours, peer := socketPair(b)
	defer syscall.Close(ours)
	frame := messageFrame(1, 100)
	f := testFleet()
	bc := &bconn{rx: rxState{fd: ours, buf: make([]byte, 4096)}}
	l := &rxLoop{f: f, out: rxOut{rng: 1}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := syscall.Write(peer, frame); err != nil {
			b.Fatal(err)
		}
		l.service(bc)
	}
	if bc.rx.closed {
		b.Fatal(f.drops)
	}
}

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, 10, minPayload, 60, 100, 1000, 70000} {
		for _, seq := range []uint64{0, 1, 42, 9999999999} {
			ts := time.Now().UnixNano()
			p := appendPayload(nil, seq, ts, size)
			if size >= minPayload && len(p) != size {
				t.Fatalf("size %d: payload is %d bytes: %s", size, len(p), p)
			}
			// As the server delivers it.
			frame := []byte(`{"type":"message","channel":"group:7","data":` + string(p) + `,"timestamp":"2026-11-22T08:00:00.000Z"}`)
			gs, gt, ok := scanSeqT(frame)
			if !ok || gs != seq || gt != ts {
				t.Fatalf("size %d seq %d: scanned %d %d %v from %s", size, seq, gs, gt, ok, frame)
			}
		}
	}
}

func TestScanSeqTRejects(t *testing.T) {
	for _, s := range []string{
		``, `{}`, `{"seq":}`, `{"seq":1}`, `{"seq":1,"t":}`, `{"seq":-1,"t":5}`, `{"seq":1,"t":-5}`,
		`{"seq":12345678901234567890,"t":1}`, `{"seq":1,"t":99999999999999999999}`, `{"seq":1,"t":9999999999999999999}`,
		`{"seq":"1","t":1}`,
	} {
		if seq, ts, ok := scanSeqT([]byte(s)); ok {
			t.Errorf("%s: scanned %d %d", s, seq, ts)
		}
	}
	// t found later in the frame when not adjacent.
	if seq, ts, ok := scanSeqT([]byte(`{"seq":5,"x":1,"t":7}`)); !ok || seq != 5 || ts != 7 {
		t.Errorf("non-adjacent t: %d %d %v", seq, ts, ok)
	}
}

func FuzzScanSeqT(f *testing.F) {
	f.Add([]byte(`{"type":"message","channel":"c","data":{"seq":1,"t":2,"pad":"xx"}}`), uint64(3), int64(4))
	f.Add([]byte(`"seq":"t":`), uint64(0), int64(0))
	f.Add([]byte(`{"seq":99999999999999999999999}`), uint64(1<<63), int64(1))
	f.Fuzz(func(t *testing.T, b []byte, seq uint64, ts int64) {
		scanSeqT(b) // never panics
		frameType(b)
		stringField(b, "code")
		uintField(b, "offset")
		if ts < 0 || seq > 9999999999 {
			return
		}
		frame := append([]byte(`{"type":"message","channel":"c","data":`), appendPayload(nil, seq, ts, 80)...)
		frame = append(frame, b...)
		gs, gt, ok := scanSeqT(frame)
		if !ok || gs != seq || gt != ts {
			t.Fatalf("generated payload scanned as %d %d %v", gs, gt, ok)
		}
	})
}

func TestFrameHelpers(t *testing.T) {
	p := []byte(`{"type":"error","code":"rate_limited","message":"slow down","channel":"c"}`)
	if string(frameType(p)) != "error" || string(stringField(p, "code")) != "rate_limited" || string(stringField(p, "channel")) != "c" {
		t.Fatal("frame helpers")
	}
	if v, ok := uintField([]byte(`{"type":"message","offset":17,"epoch":"x"}`), "offset"); !ok || v != 17 {
		t.Fatal("uintField")
	}
	if frameType([]byte(`[1]`)) != nil {
		t.Fatal("frameType of non-frame")
	}
}

func TestHistogramPercentiles(t *testing.T) {
	h := newShardedHist()
	// Uniform 1 … 100000 µs, recorded from several shards.
	for v := int64(1); v <= 100000; v++ {
		h.record(int(v), v)
	}
	l := summarize(h.merged())
	if l.Count != 100000 {
		t.Fatalf("count %d", l.Count)
	}
	for _, c := range []struct{ got, want float64 }{
		{l.P50, 50}, {l.P90, 90}, {l.P99, 99}, {l.P999, 99.9}, {l.Max, 100},
	} {
		if math.Abs(c.got-c.want)/c.want > 0.01 {
			t.Errorf("got %.3f ms, want %.3f ms ±1%%", c.got, c.want)
		}
	}
	// The interval view empties when taken; the total does not.
	if h.takeInterval().TotalCount() != 100000 || h.takeInterval().TotalCount() != 0 || h.merged().TotalCount() != 100000 {
		t.Fatal("interval accounting")
	}
	// Round trip through a worker's JSON snapshot.
	if got := summarize(importHist(exportHist(h.merged()))); got != l {
		t.Fatalf("snapshot round trip: %+v != %+v", got, l)
	}
	// Exponential distribution: p99 of Exp(mean 1 ms) is ln(100) ms.
	e := newShardedHist()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		e.record(i, int64(r.ExpFloat64()*1000))
	}
	el := summarize(e.merged())
	if want := math.Log(100); math.Abs(el.P99-want)/want > 0.03 {
		t.Errorf("exp p99 %.3f, want %.3f", el.P99, want)
	}
	if want := math.Log(2); math.Abs(el.P50-want)/want > 0.03 {
		t.Errorf("exp p50 %.3f, want %.3f", el.P50, want)
	}
	// Out-of-range values are clamped, not dropped.
	c := newHist()
	recordUS(c, -5)
	recordUS(c, histMaxUS*10)
	if c.TotalCount() != 2 {
		t.Fatal("clamping")
	}
}

func TestTracker(t *testing.T) {
	var tr tracker
	for _, s := range []uint64{0, 1, 2, 4, 3, 3, 6, 7} {
		tr.add(s)
	}
	if lost := tr.finish(9); tr.received != 7 || tr.dup != 1 || tr.reordered != 1 || lost != 2 {
		t.Fatalf("received %d dup %d reordered %d lost %d", tr.received, tr.dup, tr.reordered, lost)
	}
	// Gaps older than the window are settled as lost while running; a late
	// arrival is counted as late.
	var w tracker
	w.add(0)
	w.add(trackWindow + 10)
	if w.lost != 10 {
		t.Fatalf("slid lost %d, want 10", w.lost)
	}
	w.add(5)
	if w.late != 1 {
		t.Fatal("late not counted")
	}
	if lost := w.finish(trackWindow + 11); lost != trackWindow+10-1 {
		t.Fatalf("lost %d, want %d", lost, trackWindow+10-1)
	}
	// A far jump settles everything in one step.
	var j tracker
	j.add(0)
	j.add(5 * trackWindow)
	if lost := j.finish(5*trackWindow + 1); lost != 5*trackWindow-1 || j.received != 2 {
		t.Fatalf("jump: lost %d received %d", lost, j.received)
	}
	// Long in-order stream: nothing lost.
	var l tracker
	for s := range uint64(5 * trackWindow) {
		l.add(s)
	}
	if lost := l.finish(5 * trackWindow); lost != 0 || l.received != 5*trackWindow || l.reordered != 0 {
		t.Fatalf("in order: lost %d", lost)
	}
}

func TestParseStatCPU(t *testing.T) {
	stat := []byte("1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 12345 0 0")
	d, err := parseStatCPU(stat)
	if err != nil || d != 3*time.Second {
		t.Fatalf("%v %v", d, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("accepted garbage")
	}
	zombie := []byte("1234 (herald) Z 1 1234 1234 0 -1 4227084 100 0 0 0 250 50 0 0 20 0 1 0 12345 0 0")
	if _, err := parseStatCPU(zombie); !errors.Is(err, errExited) {
		t.Fatalf("zombie: %v", err)
	}
}

func TestTargetsMustBeLoopback(t *testing.T) {
	ok := []string{"ws://127.0.0.1:8080/ws", "ws://localhost:1/ws", "ws://[::1]:8080/ws", "ws://127.0.0.8:9/x"}
	for _, u := range ok {
		if _, err := parseTarget(u, ""); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	bad := []string{"ws://10.0.0.1:8080/ws", "ws://192.168.1.2:80/ws", "ws://example.com:80/ws", "ws://8.8.8.8/ws",
		"wss://127.0.0.1:443/ws", "ws://0.0.0.0:8080/ws", "ws://[::]:8080/ws", "ws://[::ffff:10.0.0.1]:80/ws", "http://127.0.0.1:80/ws"}
	for _, u := range bad {
		if _, err := parseTarget(u, ""); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	if _, err := parseTarget("ws://127.0.0.1:1/ws", "http://10.1.2.3:8080"); err == nil {
		t.Error("non-loopback API URL accepted")
	}
	if _, err := loopbackDialer(nil, time.Second)(t.Context(), "tcp", "93.184.216.34:80"); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("dialer reached a non-loopback address: %v", err)
	}
	cfg := Defaults()
	cfg.JWTSecret = "s"
	cfg.APIKey = "k"
	cfg.URL = "ws://10.0.0.1:8080/ws"
	if err := cfg.Validate(); err == nil {
		t.Error("config with non-loopback target validated")
	}
}

// serverFrame encodes an unmasked server text frame.
func serverFrame(op ws.OpCode, p []byte) []byte {
	b := []byte{0x80 | byte(op)}
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// loopReader returns data over and over.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}

func messageFrame(seq uint64, payload int) []byte {
	data := appendPayload(nil, seq, time.Now().UnixNano(), payload)
	return serverFrame(ws.OpText, []byte(`{"type":"message","channel":"bench","data":`+string(data)+`,"timestamp":"2026-11-22T08:00:00.000Z"}`))
}

func TestReadFrame(t *testing.T) {
	var stream []byte
	stream = append(stream, messageFrame(1, 100)...)
	stream = append(stream, serverFrame(ws.OpPing, []byte("hi"))...)
	stream = append(stream, messageFrame(2, 10000)...) // larger than the read buffer
	stream = append(stream, messageFrame(3, 300)...)
	c := &wsConn{br: bufio.NewReaderSize(bytes.NewReader(stream), 512), hdr: make([]byte, 2, ws.MaxHeaderSize-2)}
	want := []struct {
		op  ws.OpCode
		seq uint64
	}{{ws.OpText, 1}, {ws.OpPing, 0}, {ws.OpText, 2}, {ws.OpText, 3}}
	for _, w := range want {
		op, p, err := c.readFrame()
		if err != nil || op != w.op {
			t.Fatalf("got %v %v, want %v", op, err, w.op)
		}
		if op == ws.OpText {
			if seq, _, ok := scanSeqT(p); !ok || seq != w.seq {
				t.Fatalf("seq %d, want %d", seq, w.seq)
			}
		}
	}
	if _, _, err := c.readFrame(); err == nil {
		t.Fatal("read past the end")
	}
	// Masked frames from a server are a protocol error.
	m := serverFrame(ws.OpText, []byte("x"))
	m[1] |= 0x80
	m = append(m[:2], append([]byte{1, 2, 3, 4}, m[2:]...)...)
	c = &wsConn{br: bufio.NewReader(bytes.NewReader(m)), hdr: make([]byte, 2, ws.MaxHeaderSize-2)}
	if _, _, err := c.readFrame(); err == nil {
		t.Fatal("masked server frame accepted")
	}
}

func TestWriteFrameIsMasked(t *testing.T) {
	var buf bytes.Buffer
	c := &wsConn{nc: nil, rng: 7}
	c.nc = &writeConn{w: &buf}
	payload := []byte(`{"type":"subscribe","channel":"bench"}`)
	if err := c.writeText(payload); err != nil {
		t.Fatal(err)
	}
	h, err := ws.ReadHeader(&buf)
	if err != nil || !h.Masked || h.OpCode != ws.OpText || int(h.Length) != len(payload) {
		t.Fatalf("header %+v %v", h, err)
	}
	got := buf.Bytes()
	ws.Cipher(got, h.Mask, 0)
	if !bytes.Equal(got, payload) {
		t.Fatalf("unmasked %q", got)
	}
}

// BenchmarkReadFrame is the subscriber hot path: read one frame, find seq and
// t, record the latency and the sequence.
func BenchmarkReadFrame(b *testing.B) {
	var stream []byte
	for i := range 64 {
		stream = append(stream, messageFrame(uint64(i), 100)...)
	}
	c := &wsConn{br: bufio.NewReaderSize(&loopReader{data: stream}, 4096), hdr: make([]byte, 2, ws.MaxHeaderSize-2)}
	f := &localFleet{lat: newShardedHist()}
	bc := &bconn{ws: c}
	b.ReportAllocs()
	b.SetBytes(int64(len(stream) / 64))
	for b.Loop() {
		op, p, err := c.readFrame()
		if err != nil || op != ws.OpText {
			b.Fatal(err)
		}
		f.onMessage(bc, p)
	}
}

func BenchmarkScanSeqT(b *testing.B) {
	frame := messageFrame(123456, 100)[2:]
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := scanSeqT(frame); !ok {
			b.Fatal("no seq")
		}
	}
}

func BenchmarkAppendPayload(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendPayload(buf[:0], 123456, time.Now().UnixNano(), 100)
	}
}

// writeConn is a net.Conn that only writes, to w.
type writeConn struct {
	net.Conn
	w io.Writer
}

func (c *writeConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// TestWaitUntilNeverEarly: whether it spins or only sleeps, the publisher
// never sends before a publication's due time, returns at once for a time
// already past, and gives up promptly when cancelled.
func TestWaitUntilNeverEarly(t *testing.T) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for _, spin := range []time.Duration{0, 2 * time.Millisecond} {
		for i := range 10 {
			due := time.Now().Add(time.Duration(i%4) * time.Millisecond)
			if !waitUntil(t.Context(), timer, due, spin) {
				t.Fatal("waitUntil gave up without a cancel")
			}
			if now := time.Now(); now.Before(due) {
				t.Fatalf("spin %v: returned %v before due", spin, due.Sub(now))
			}
		}
	}
	past := time.Now().Add(-time.Second)
	if !waitUntil(t.Context(), timer, past, time.Millisecond) {
		t.Fatal("a due time in the past should return true")
	}
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	start := time.Now()
	for _, spin := range []time.Duration{0, 10 * time.Millisecond} {
		if waitUntil(ctx, timer, time.Now().Add(time.Hour), spin) {
			t.Fatalf("spin %v: waitUntil returned true after cancel", spin)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

// TestSpinOnlyAtLowRates: the publisher spins only while that costs at most
// maxSpinShare of a core.
func TestSpinOnlyAtLowRates(t *testing.T) {
	c := Defaults()
	c.Spin = 1500 * time.Microsecond
	for rate, want := range map[float64]time.Duration{10: c.Spin, 66: c.Spin, 67: 0, 200: 0} {
		c.Rate = rate
		if got := c.spin(); got != want {
			t.Errorf("rate %v: spin %v, want %v", rate, got, want)
		}
	}
	c.Rate, c.Spin = 10, 0
	if c.spin() != 0 {
		t.Error("--spin 0 should turn spinning off")
	}
}

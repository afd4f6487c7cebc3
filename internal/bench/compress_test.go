package bench

import (
	"bufio"
	"bytes"
	stdflate "compress/flate"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"
)

// deflatePayload compresses p as herald's hub does (klauspost flate,
// BestSpeed, one sync flush, no context) and drops the 00 00 ff ff tail.
func deflatePayload(t testing.TB, p []byte, std bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	if std {
		w, _ := stdflate.NewWriter(&buf, stdflate.BestCompression)
		_, _ = w.Write(p)
		_ = w.Flush()
	} else {
		w, _ := flate.NewWriter(&buf, flate.BestSpeed)
		_, _ = w.Write(p)
		_ = w.Flush()
	}
	b := buf.Bytes()
	if !bytes.HasSuffix(b, []byte{0, 0, 0xff, 0xff}) {
		t.Fatal("no sync flush tail")
	}
	return b[:len(b)-4]
}

// compressedFrame is a server text frame with RSV1 set over the deflated p.
func compressedFrame(t testing.TB, p []byte, std bool) []byte {
	f := serverFrame(ws.OpText, deflatePayload(t, p, std))
	f[0] |= 0x40
	return f
}

func deliveryPayload(seq uint64, size int) []byte {
	data := appendCompressible(nil, seq, time.Now().UnixNano(), size)
	return []byte(`{"type":"message","channel":"bench","data":` + string(data) + `,"timestamp":"2026-11-22T08:00:00.000Z"}`)
}

func newTestConn(stream []byte, bufSize int, deflate bool) *wsConn {
	return &wsConn{br: bufio.NewReaderSize(bytes.NewReader(stream), bufSize), hdr: make([]byte, 2, ws.MaxHeaderSize-2), deflate: deflate}
}

func TestReadFrameCompressed(t *testing.T) {
	type frame struct {
		op         ws.OpCode
		msg        []byte
		wire       []byte
		compressed bool
	}
	var frames []frame
	add := func(op ws.OpCode, msg, wire []byte, compressed bool) {
		frames = append(frames, frame{op, msg, wire, compressed})
	}
	small := deliveryPayload(1, 100)
	add(ws.OpText, small, serverFrame(ws.OpText, small), false) // under the threshold: plain
	m2 := deliveryPayload(2, 2000)
	add(ws.OpText, m2, compressedFrame(t, m2, false), true)
	add(ws.OpPing, []byte("hi"), serverFrame(ws.OpPing, []byte("hi")), false)
	m3 := deliveryPayload(3, 60000) // compressed frame larger than the read buffer
	add(ws.OpText, m3, compressedFrame(t, m3, false), true)
	m4 := deliveryPayload(4, 4096)
	add(ws.OpText, m4, compressedFrame(t, m4, true), true) // another deflater, dynamic Huffman blocks
	m5 := deliveryPayload(5, 700)
	add(ws.OpText, m5, serverFrame(ws.OpText, m5), false) // compression did not pay: plain
	m6 := appendPayload(nil, 6, time.Now().UnixNano(), 100000)
	m6 = []byte(`{"type":"message","channel":"bench","data":` + string(m6) + `}`)
	add(ws.OpText, m6, compressedFrame(t, m6, false), true) // inflates ~1000×

	var stream []byte
	for _, f := range frames {
		stream = append(stream, f.wire...)
	}
	c := newTestConn(stream, 4096, true)
	for i, f := range frames {
		op, p, err := c.readFrame()
		if err != nil || op != f.op {
			t.Fatalf("frame %d: %v %v, want %v", i, op, err, f.op)
		}
		if !bytes.Equal(p, f.msg) {
			t.Fatalf("frame %d: got %d bytes %.80q…, want %d bytes", i, len(p), p, len(f.msg))
		}
		if c.lastWire != len(f.wire) || c.lastCompressed != f.compressed {
			t.Fatalf("frame %d: wire %d compressed %v, want %d %v", i, c.lastWire, c.lastCompressed, len(f.wire), f.compressed)
		}
		if op == ws.OpText {
			want, _, _ := scanSeqT(f.msg)
			if seq, _, ok := scanSeqT(p); !ok || seq != want {
				t.Fatalf("frame %d: seq %d %v, want %d", i, seq, ok, want)
			}
		}
	}
	if _, _, err := c.readFrame(); err == nil {
		t.Fatal("read past the end")
	}
}

func TestReadFrameCompressedErrors(t *testing.T) {
	msg := deliveryPayload(1, 2000)
	// RSV1 without negotiation.
	if _, _, err := newTestConn(compressedFrame(t, msg, false), 4096, false).readFrame(); err == nil {
		t.Fatal("compressed frame accepted without negotiation")
	}
	// RSV1 on a control frame.
	ping := serverFrame(ws.OpPing, []byte("x"))
	ping[0] |= 0x40
	if _, _, err := newTestConn(ping, 4096, true).readFrame(); !errors.Is(err, wsflate.ErrUnexpectedCompressionBit) {
		t.Fatalf("compressed ping: %v", err)
	}
	// RSV2.
	r2 := serverFrame(ws.OpText, []byte("{}"))
	r2[0] |= 0x20
	if _, _, err := newTestConn(r2, 4096, true).readFrame(); err == nil {
		t.Fatal("RSV2 accepted")
	}
	// Garbage instead of deflate data.
	bad := serverFrame(ws.OpText, bytes.Repeat([]byte{0xff}, 64))
	bad[0] |= 0x40
	if _, _, err := newTestConn(bad, 4096, true).readFrame(); err == nil {
		t.Fatal("garbage inflated")
	}
	// Truncated deflate data.
	d := deflatePayload(t, msg, false)
	tr := serverFrame(ws.OpText, d[:len(d)/2])
	tr[0] |= 0x40
	if _, _, err := newTestConn(tr, 4096, true).readFrame(); err == nil {
		t.Fatal("truncated message inflated")
	}
	// A message inflating past the limit.
	var f inflater
	if _, err := f.inflate(deflatePayload(t, bytes.Repeat([]byte("a"), 10000), false), 5000); !errors.Is(err, errInflateLimit) {
		t.Fatalf("limit: %v", err)
	}
	// The inflater is usable again after an error.
	got, err := f.inflate(deflatePayload(t, msg, false), maxFrame)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("after error: %v", err)
	}
}

// TestInflateAllocs: after warm-up, reading and inflating a compressed frame
// allocates nothing.
func TestInflateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	var stream []byte
	for i := range 16 {
		stream = append(stream, compressedFrame(t, deliveryPayload(uint64(i), 2000), false)...)
	}
	c := &wsConn{br: bufio.NewReaderSize(&loopReader{data: stream}, 4096), hdr: make([]byte, 2, ws.MaxHeaderSize-2), deflate: true}
	for range 32 {
		if _, _, err := c.readFrame(); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		_, p, err := c.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := scanSeqT(p); !ok {
			t.Fatal("no seq")
		}
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per compressed frame", allocs)
	}
}

func TestDeflateAccepted(t *testing.T) {
	opt := func(p wsflate.Parameters) httphead.Option { return p.Option() }
	if ok, err := deflateAccepted(nil); ok || err != nil {
		t.Fatal("nothing accepted")
	}
	if ok, err := deflateAccepted([]httphead.Option{opt(deflateParams)}); !ok || err != nil {
		t.Fatalf("no context takeover: %v %v", ok, err)
	}
	if ok, err := deflateAccepted([]httphead.Option{opt(wsflate.Parameters{ClientNoContextTakeover: true})}); ok || !errors.Is(err, errContextTakeover) {
		t.Fatalf("server context takeover: %v %v", ok, err)
	}
	if ok, err := deflateAccepted([]httphead.Option{{Name: []byte("x-other")}}); ok || err != nil {
		t.Fatal("other extension")
	}
}

func TestCompressiblePayload(t *testing.T) {
	for _, size := range []int{0, 10, minPayload, minPayload + 5, 100, 150, 300, 1000, 2000, 4096, 70000} {
		for _, seq := range []uint64{0, 1, 42, 9999999999} {
			ts := time.Now().UnixNano()
			p := appendCompressible(nil, seq, ts, size)
			if size >= minPayload && len(p) != size {
				t.Fatalf("size %d: payload is %d bytes: %s", size, len(p), p)
			}
			if !json.Valid(p) {
				t.Fatalf("size %d: not JSON: %s", size, p)
			}
			if gs, gt, ok := scanSeqT(p); !ok || gs != seq || gt != ts {
				t.Fatalf("size %d seq %d: scanned %d %d %v", size, seq, gs, gt, ok)
			}
			if !bytes.Equal(p, appendCompressible(nil, seq, ts, size)) {
				t.Fatal("not deterministic")
			}
		}
	}
	// Realistic, not degenerate: a 2000-byte payload deflates to 25–45 %.
	p := appendCompressible(nil, 7, time.Now().UnixNano(), 2000)
	if r := float64(len(deflatePayload(t, p, false))) / 2000; r < 0.25 || r > 0.45 {
		t.Fatalf("deflate ratio %.2f", r)
	}
	if !bytes.Contains(p, []byte(`"items":[{"id":`)) {
		t.Fatalf("no records: %s", p)
	}
	// The default payload is unchanged.
	if d := appendPayloadKind(nil, 3, 5, 100, false); !bytes.Equal(d, appendPayload(nil, 3, 5, 100)) {
		t.Fatal("default payload changed")
	}
}

// BenchmarkReadFrameCompressed is the subscriber hot path for a compressed
// 2000-byte payload: read, inflate, scan, record.
func BenchmarkReadFrameCompressed(b *testing.B) {
	var stream []byte
	for i := range 64 {
		stream = append(stream, compressedFrame(b, deliveryPayload(uint64(i), 2000), false)...)
	}
	c := &wsConn{br: bufio.NewReaderSize(&loopReader{data: stream}, 4096), hdr: make([]byte, 2, ws.MaxHeaderSize-2), deflate: true}
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

package ws

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"

	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/protocol"
)

func TestSealHeaderSizes(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 200000} {
		payload := bytes.Repeat([]byte{'a'}, n)
		f := TextFrame(payload)
		if f[0] != 0x81 {
			t.Fatalf("n=%d: first byte %#x, want FIN|text", n, f[0])
		}
		var got, hl int
		switch l := int(f[1]); {
		case l&0x80 != 0:
			t.Fatalf("n=%d: server frame must not be masked", n)
		case l <= 125:
			got, hl = l, 2
		case l == 126:
			got, hl = int(binary.BigEndian.Uint16(f[2:])), 4
		default:
			got, hl = int(binary.BigEndian.Uint64(f[2:])), 10
		}
		if got != n || len(f) != hl+n || !bytes.Equal(f[hl:], payload) {
			t.Fatalf("n=%d: header says %d, frame %d bytes", n, got, len(f))
		}
	}
	cf := CloseFrame(4008, "slow consumer")
	if cf[0] != 0x88 || int(cf[1]) != 2+len("slow consumer") || binary.BigEndian.Uint16(cf[2:]) != 4008 {
		t.Fatalf("close frame % x", cf)
	}
}

func BenchmarkDeflateFrame(b *testing.B) {
	payload := bytes.Repeat([]byte(`{"activeUsers":12,"requestsPerMinute":45,"avgResponseTime":234},`), 64)
	pool := newDeflaterPool()
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if deflateFrame(payload, pool) == nil {
			b.Fatal("not compressed")
		}
	}
}

func TestDeflateFrameRoundTrip(t *testing.T) {
	payload := bytes.Repeat([]byte(`{"metric":"value"} `), 100)
	f := deflateFrame(payload, newDeflaterPool())
	if f == nil || f[0] != 0xC1 {
		t.Fatalf("frame header % x, want FIN|RSV1|text", f[:2])
	}
	hl := 2
	if f[1] == 126 {
		hl = 4
	}
	r := flate.NewReader(io.MultiReader(bytes.NewReader(f[hl:]), bytes.NewReader([]byte{0, 0, 0xff, 0xff})))
	got, err := io.ReadAll(r)
	if err != nil && err != io.ErrUnexpectedEOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("round trip mismatch")
	}
	if deflateFrame([]byte("x"), newDeflaterPool()) != nil {
		t.Fatal("incompressible payload should stay plain")
	}
}

// TestWiresEncodeOncePerWire: a message is encoded once for the plain
// wire and once for the deflate wire however many clients take it, the
// deflate wire compresses only from compressMin, and a message that does
// not shrink goes to deflate clients as the plain frame itself.
func TestWiresEncodeOncePerWire(t *testing.T) {
	h := hub.New(hub.Options{QueueBytes: 1 << 20, PingInterval: time.Minute, PongTimeout: 2 * time.Minute},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	w := Register(h, 64)
	big := h.Publication(protocol.Message{Channel: "c", Data: bytes.Repeat([]byte(`"abcabcabc",`), 20)})
	plain := big.Bytes(w.Plain)
	if !bytes.Equal(payloadOf(plain), big.JSON()) || plain[0] != 0x81 {
		t.Fatalf("plain frame % x… does not frame the JSON document", plain[:4])
	}
	deflated := big.Bytes(w.Deflate)
	if deflated[0] != 0xC1 || len(deflated) >= len(plain) {
		t.Fatalf("deflate wire: header %#x, %d bytes against %d plain", deflated[0], len(deflated), len(plain))
	}
	if &big.Bytes(w.Deflate)[0] != &deflated[0] || &big.Bytes(w.Plain)[0] != &plain[0] {
		t.Fatal("a second use encoded the message again")
	}
	small := h.Publication(protocol.Message{Channel: "c", Data: []byte(`1`)})
	if &small.Bytes(w.Deflate)[0] != &small.Bytes(w.Plain)[0] {
		t.Fatal("a message under compressMin was not sent as the plain frame")
	}
	if w.For(true) != w.Deflate || w.For(false) != w.Plain || w.Plain == w.Deflate {
		t.Fatalf("wires %+v", w)
	}
}

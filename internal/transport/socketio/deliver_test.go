package socketio

import (
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
)

// benchPub is a publication of ~100 bytes of data, as herald bench sends.
func benchPub() protocol.Message {
	return protocol.Message{Channel: "org:42", Offset: 12345, Time: time.Now(),
		Data: []byte(`{"seq":1,"t":1733600000000000000,"pad":"` + strings.Repeat("x", 60) + `"}`)}
}

// directConn is a direct socket in one room, with recovery on.
func directConn() *Conn {
	return &Conn{direct: &wsLink{}, pid: "pid", rooms: map[string]*position{"org:42": {epoch: "e1", offset: 1}}}
}

// TestWrapDirect: a direct socket's delivery is one WebSocket text frame,
// header before the shared bytes and the recovery offset after them; a
// delivery its event filter refuses is an Engine.IO noop frame.
func TestWrapDirect(t *testing.T) {
	c := directConn()
	m := &hub.Message{Pub: benchPub()}
	shared := encode(m)
	before, after := c.Wrap(m, shared)
	frame := string(before) + string(shared) + string(after)
	payload := frame[4:] // 126 < length < 64 KiB: a 16-bit length
	if frame[0] != 0x81 || frame[1] != 126 || int(frame[2])<<8|int(frame[3]) != len(payload) {
		t.Fatalf("frame header % x for %d payload bytes", frame[:4], len(payload))
	}
	if !strings.HasPrefix(payload, `42["message",{"type":"message","channel":"org:42"`) || !strings.HasSuffix(payload, `"]`) {
		t.Fatalf("payload %q", payload)
	}
	rec := payload[strings.LastIndex(payload, `,"`)+2 : len(payload)-2]
	rooms, ok := parseRecovery(rec)
	if !ok || rooms["org:42"] != (position{epoch: "e1", offset: 12345}) {
		t.Fatalf("recovery offset %q: %v %v", rec, rooms, ok)
	}
	c.filter.remove([]string{"message"})
	before, after = c.Wrap(m, shared)
	if string(before[len(before)-1:]) != "6" || after != nil || int(before[2])<<8|int(before[3]) != len(shared)+1 {
		t.Fatalf("filtered delivery: % x … %q", before, after)
	}
}

// BenchmarkEncode is the socketio wire's encoder: once per publication,
// whatever the number of Socket.IO subscribers.
func BenchmarkEncode(b *testing.B) {
	m := &hub.Message{Pub: benchPub()}
	b.ReportAllocs()
	for b.Loop() {
		encode(m)
	}
}

// BenchmarkWrapDirect is what each direct socket adds per delivery: its
// frame header and recovery offset (one room).
func BenchmarkWrapDirect(b *testing.B) {
	c := directConn()
	m := &hub.Message{Pub: benchPub()}
	shared := encode(m)
	b.ReportAllocs()
	for b.Loop() {
		m.Pub.Offset++
		c.Wrap(m, shared)
	}
}

// TestRecoveryOffsets: the offset appendRecovery makes parses back to every
// room's position; the base64 form of earlier versions is still read; an
// epoch or channel that could not be herald's is refused.
func TestRecoveryOffsets(t *testing.T) {
	rooms := map[string]*position{"org:42": {epoch: "a1b2", offset: 7}, "user:u1": {epoch: "c3", offset: 0}}
	s := string(appendRecovery(nil, rooms))
	if s != "~org:42|a1b2|7,user:u1|c3|0" {
		t.Fatalf("offset %q", s)
	}
	got, ok := parseRecovery(s)
	if !ok || len(got) != 2 || got["org:42"] != (position{epoch: "a1b2", offset: 7}) || got["user:u1"] != (position{epoch: "c3", offset: 0}) {
		t.Fatalf("parsed %v %v", got, ok)
	}
	old := "b3JnOjQyIDcgYTFiMg" // base64url("org:42 7 a1b2")
	if got, ok := parseRecovery(old); !ok || got["org:42"] != (position{epoch: "a1b2", offset: 7}) {
		t.Fatalf("earlier form: %v %v", got, ok)
	}
	for _, bad := range []string{`~org:42|a"b|7`, "~org 42|ab|7", "~org:42|ab", "~org:42|ab|x", "~a|b|1,a|b|2", "!!"} {
		if _, ok := parseRecovery(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

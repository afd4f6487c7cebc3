package socketio

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/protocol"
)

// benchPub is a publication of ~100 bytes of data, as herald bench sends.
func benchPub() protocol.Message {
	return protocol.Message{Channel: "org:42", Offset: 12345, Time: time.Now(),
		Data: []byte(`{"seq":1,"t":1733600000000000000,"pad":"` + strings.Repeat("x", 60) + `"}`)}
}

// testHub is a hub with the socketio wire and its frame wires registered.
func testHub() (*hub.Hub, hub.Wire, *FrameWires) {
	h := hub.New(hub.Options{QueueBytes: 1 << 20, PingInterval: time.Minute, PongTimeout: 2 * time.Minute},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	w := h.RegisterWire("socketio", encode)
	return h, w, registerFrames(h, w)
}

// directConn is a direct socket in one room, with recovery on; frames nil
// makes it frame every delivery itself.
func directConn(frames *FrameWires) *Conn {
	srv := &Server{o: Options{WebSocket: &WebSocketOptions{Frames: frames}}}
	return &Conn{srv: srv, direct: &wsLink{}, pid: "pid", rooms: roomSet{list: []room{{ch: "org:42", pos: &position{epoch: "e1", offset: 1}}}}}
}

// delivered is what Wrap has a socket sent for m: the frame's payload,
// after checking its header.
func delivered(t *testing.T, c *Conn, m *hub.Message, shared []byte) string {
	t.Helper()
	before, body, after := c.Wrap(m, shared)
	frame := string(before) + string(body) + string(after)
	payload := frame[4:] // 126 < length < 64 KiB: a 16-bit length
	if frame[0] != 0x81 || frame[1] != 126 || int(frame[2])<<8|int(frame[3]) != len(payload) {
		t.Fatalf("frame header % x for %d payload bytes", frame[:4], len(payload))
	}
	return payload
}

// recoveryOf is the recovery offset a delivery's payload ends with.
func recoveryOf(t *testing.T, payload string) map[string]position {
	t.Helper()
	if !strings.HasSuffix(payload, `"]`) {
		t.Fatalf("payload %q", payload)
	}
	rec := payload[strings.LastIndex(payload, `,"`)+2 : len(payload)-2]
	rooms, ok := parseRecovery(rec)
	if !ok {
		t.Fatalf("recovery offset %q", rec)
	}
	return rooms
}

// TestWrapDirect: a direct socket's delivery is one WebSocket text frame
// whose payload is the event with the socket's recovery offset last. A
// socket whose one room is the publication's, at its epoch, is sent the
// frame shared by every such socket; one in two rooms, or at another
// epoch, its own frame around the shared bytes — the same payload but
// for the offset. A delivery its event filter refuses is not sent.
func TestWrapDirect(t *testing.T) {
	h, w, frames := testHub()
	pub := benchPub()
	pub.Epoch = "e1"
	m := h.Publication(pub)
	shared := m.Bytes(w)
	for _, fw := range []*FrameWires{nil, frames} {
		c := directConn(fw)
		payload := delivered(t, c, m, shared)
		if !strings.HasPrefix(payload, `42["message",{"type":"message","channel":"org:42"`) {
			t.Fatalf("payload %q", payload)
		}
		if rooms := recoveryOf(t, payload); len(rooms) != 1 || rooms["org:42"] != (position{epoch: "e1", offset: 12345}) {
			t.Fatalf("recovery offset %v", rooms)
		}
		if _, body, _ := c.Wrap(m, shared); (fw != nil) != (&body[0] == &m.Bytes(frames.offset)[0]) {
			t.Fatalf("shared frame used: %v, frame wires: %v", fw == nil, fw != nil)
		}
		c.filter.remove([]string{"message"})
		if before, body, after := c.Wrap(m, shared); before != nil || body != nil || after != nil {
			t.Fatalf("filtered delivery sent: %q %q %q", before, body, after)
		}
	}
	two := directConn(frames)
	two.rooms.add("user:u1", &position{epoch: "e2", offset: 3})
	if rooms := recoveryOf(t, delivered(t, two, m, shared)); len(rooms) != 2 || rooms["user:u1"] != (position{epoch: "e2", offset: 3}) ||
		rooms["org:42"] != (position{epoch: "e1", offset: 12345}) {
		t.Fatalf("two rooms: %v", rooms)
	}
	other := directConn(frames)
	other.rooms.get("org:42").epoch = "e0"
	if rooms := recoveryOf(t, delivered(t, other, m, shared)); rooms["org:42"] != (position{epoch: "e0", offset: 12345}) {
		t.Fatalf("another epoch: %v", rooms)
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
	c := directConn(nil)
	m := &hub.Message{Pub: benchPub()}
	shared := encode(m)
	b.ReportAllocs()
	for b.Loop() {
		m.Pub.Offset++
		c.Wrap(m, shared)
	}
}

// BenchmarkWrapDirectShared is the same socket sent the frame every socket
// in its one room shares, encoded once (by the first).
func BenchmarkWrapDirectShared(b *testing.B) {
	h, w, frames := testHub()
	c := directConn(frames)
	pub := benchPub()
	pub.Epoch = "e1"
	m := h.Publication(pub)
	shared := m.Bytes(w)
	b.ReportAllocs()
	for b.Loop() {
		c.Wrap(m, shared)
	}
}

// TestRoomSet: a socket's rooms are found, replaced and removed by
// channel, and kept in channel order.
func TestRoomSet(t *testing.T) {
	var s roomSet
	a, b, c := &position{offset: 1}, &position{offset: 2}, &position{offset: 3}
	s.add("b", b)
	s.add("c", c)
	s.add("a", a)
	s.add("b", c)
	if s.len() != 3 || s.get("a") != a || s.get("b") != c || s.get("c") != c || s.get("d") != nil {
		t.Fatalf("rooms %v", s.list)
	}
	s.remove("b")
	s.remove("d")
	var names []string
	for ch := range s.all() {
		names = append(names, ch)
	}
	if strings.Join(names, ",") != "a,c" || s.get("b") != nil {
		t.Fatalf("after remove: %v", names)
	}
}

// TestCallTable: calls in flight are found by id, one or many, and
// removing the last leaves no table.
func TestCallTable(t *testing.T) {
	var tab callTable
	a, b, c := &call{channel: "a"}, &call{channel: "b"}, &call{channel: "c"}
	tab.put(1, a)
	tab.put(2, b)
	tab.put(3, c)
	if tab.get(1) != a || tab.get(2) != b || tab.get(3) != c || tab.get(4) != nil {
		t.Fatal("calls not found by id")
	}
	tab.remove(1)
	tab.put(4, a)
	if tab.get(1) != nil || tab.get(4) != a || tab.get(2) != b {
		t.Fatal("after removing the first call")
	}
	for _, id := range []uint64{2, 3, 4, 5} {
		tab.remove(id)
	}
	if tab.one != nil || tab.more != nil {
		t.Fatalf("empty table %+v", tab)
	}
}

// TestRecoveryOffsets: the offset appendRecovery makes parses back to every
// room's position; the base64 form of earlier versions is still read; an
// epoch or channel that could not be herald's is refused.
func TestRecoveryOffsets(t *testing.T) {
	var rooms roomSet
	rooms.add("user:u1", &position{epoch: "c3", offset: 0})
	rooms.add("org:42", &position{epoch: "a1b2", offset: 7})
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

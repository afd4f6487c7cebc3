package sse

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// parsed is one event as an EventSource dispatches it.
type parsed struct {
	name, data, id string
}

// parseStream interprets b as the WHATWG event-stream algorithm does
// (§9.2.6): lines end with CRLF, LF or CR; a blank line dispatches; a
// comment line is ignored; one space after the colon is dropped; data
// lines are joined with LF; the last event id persists between events.
func parseStream(t *testing.T, b []byte) (events []parsed, comments int) {
	t.Helper()
	var name, lastID string
	var data []string
	hasData := false
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			t.Fatalf("stream ends inside a line: %q", b)
		}
		line := string(b[:i])
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
		b = b[i+1:]
		switch {
		case line == "":
			if hasData {
				n := name
				if n == "" {
					n = "message"
				}
				events = append(events, parsed{name: n, data: strings.Join(data, "\n"), id: lastID})
			}
			name, data, hasData = "", nil, false
		case line[0] == ':':
			comments++
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				name = value
			case "data":
				data, hasData = append(data, value), true
			case "id":
				if !strings.Contains(value, "\x00") {
					lastID = value
				}
			}
		}
	}
	if name != "" || hasData {
		t.Fatalf("stream ends inside an event")
	}
	return events, comments
}

func TestAppendEventRoundTrips(t *testing.T) {
	cases := []struct{ name, data string }{
		{"", `{"type":"message","channel":"a","data":1}`},
		{"message", `{}`},
		{"metrics", `{"type":"message","event":"metrics"}`},
		{"herald/subscribed", `{"type":"subscribed"}`},
		{"", "{\"a\":\n1,\r\n\"b\":\r2\n\n}"}, // raw JSON whitespace: LF, CRLF, CR, two LFs
		{"", " leading space"},
		{"", ""},
		{"", "\n"},
		{"", "x\r"},
	}
	var stream []byte
	for _, c := range cases {
		stream = AppendEvent(stream, c.name, []byte(c.data))
	}
	stream = append(stream, Heartbeat...)
	got, comments := parseStream(t, stream)
	if len(got) != len(cases) || comments != 1 {
		t.Fatalf("got %d events and %d comments from %q, want %d and 1", len(got), comments, stream, len(cases))
	}
	for i, c := range cases {
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(c.data)
		wantName := c.name
		if wantName == "" {
			wantName = "message"
		}
		if got[i].data != want || got[i].name != wantName {
			t.Errorf("event %d: got %q %q, want %q %q", i, got[i].name, got[i].data, wantName, want)
		}
		if json.Valid([]byte(c.data)) && !json.Valid([]byte(got[i].data)) {
			t.Errorf("event %d: valid JSON became invalid: %q", i, got[i].data)
		}
	}
	if !bytes.Contains(stream, []byte("data: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2\ndata: \ndata: }\n\n")) {
		t.Errorf("multi-line data not split into data lines: %q", stream)
	}
}

func TestEventSizeBounds(t *testing.T) {
	data := []byte("a\nb\r\nc\rd")
	n := len(AppendEvent(nil, "herald/subscribed", data))
	if max := EventSize("herald/subscribed", len(data), 3); n > max {
		t.Fatalf("AppendEvent wrote %d bytes, EventSize says at most %d", n, max)
	}
}

func TestTagsAreStableHex(t *testing.T) {
	// FNV-1a of "a" is 0xe40c292c.
	if got := string(TagOf("a").append(nil)); got != "e40c29" {
		t.Fatalf("tag of a = %q, want e40c29", got)
	}
	if TagOf("org:42") == TagOf("org:43") {
		t.Fatal("neighbouring channels share a tag")
	}
}

func TestCursorIDRoundTrip(t *testing.T) {
	chans := []string{"org:42", "chat", "feed"}
	c := NewCursor(chans)
	if id := c.AppendID(nil); len(id) != 0 {
		t.Fatalf("no position known, yet an id: %q", id)
	}
	c.Set(0, Position{Offset: 41, Epoch: "4be1c0d2a9f3"})
	c.Set(1, Position{Offset: 0, Epoch: "77aa00bb11cc-1a2b3c4d"})
	if !c.Advance(0, 42) || c.Advance(0, 42) || c.Advance(2, 5) {
		t.Fatal("Advance: only a later offset of a known channel moves the position")
	}
	line := c.AppendID(nil)
	if len(line) > c.IDSize() {
		t.Fatalf("id line %d bytes, IDSize %d", len(line), c.IDSize())
	}
	ev, _ := parseStream(t, append(line, "data: x\n\n"...))
	id := ev[0].id
	want := string(TagOf("org:42").append(nil)) + ":42:4be1c0d2a9f3." + string(TagOf("chat").append(nil)) + ":0:77aa00bb11cc-1a2b3c4d"
	if id != want {
		t.Fatalf("id %q, want %q", id, want)
	}
	claims, err := ParseID(id)
	if err != nil || claims.Len() != 2 {
		t.Fatalf("ParseID(%q) = %d claims, %v", id, claims.Len(), err)
	}
	// The channels may come back in another order, with others added.
	for _, tc := range []struct {
		ch   string
		want Position
		ok   bool
	}{
		{"chat", Position{0, "77aa00bb11cc-1a2b3c4d"}, true},
		{"org:42", Position{42, "4be1c0d2a9f3"}, true},
		{"feed", Position{}, false},
		{"new", Position{}, false},
	} {
		if got, ok := claims.Lookup(tc.ch); ok != tc.ok || got != tc.want {
			t.Errorf("Lookup(%s) = %+v %v, want %+v %v", tc.ch, got, ok, tc.want, tc.ok)
		}
	}
	// An epoch an id cannot carry leaves the channel out of the id.
	c.Set(0, Position{Offset: 1, Epoch: "bad epoch"})
	if c.Known(0) || strings.Contains(string(c.AppendID(nil)), ":1:bad") {
		t.Fatal("an epoch with a space was written into the id")
	}
}

func TestCursorWorstCaseFitsMaxIDLen(t *testing.T) {
	chans := make([]string, MaxChannels)
	for i := range chans {
		chans[i] = "channel-" + strings.Repeat("x", i)
	}
	c := NewCursor(chans)
	for i := range chans {
		c.Set(i, Position{Offset: ^uint64(0), Epoch: strings.Repeat("e", MaxEpochLen)})
	}
	line := c.AppendID(nil)
	id := strings.TrimSuffix(strings.TrimPrefix(string(line), "id: "), "\n")
	if len(id) != MaxIDLen {
		t.Fatalf("worst-case id is %d bytes, MaxIDLen %d", len(id), MaxIDLen)
	}
	claims, err := ParseID(id)
	if err != nil || claims.Len() != MaxChannels {
		t.Fatalf("worst-case id does not parse back: %d claims, %v", claims.Len(), err)
	}
	if _, err := ParseID(id + "x"); err == nil {
		t.Fatal("an id over MaxIDLen parsed")
	}
}

func TestParseIDRejects(t *testing.T) {
	ok := "e40c29:5:abc"
	if _, err := ParseID(ok); err != nil {
		t.Fatalf("ParseID(%q): %v", ok, err)
	}
	for _, bad := range []string{
		"x", ".", "e40c29:5:abc.", ".e40c29:5:abc", "e40c29:5:abc..e40c29:5:abc",
		"E40C29:5:abc",                    // upper-case tag
		"e40c2:5:abc",                     // short tag
		"e40c299:5:abc",                   // long tag (the colon is out of place)
		"e40c29:05:abc",                   // leading zero
		"e40c29::abc",                     // no offset
		"e40c29:-1:abc",                   // sign
		"e40c29:+1:abc",                   // sign
		"e40c29:18446744073709551616:abc", // overflow
		"e40c29:1:",                       // no epoch
		"e40c29:1:a:b",                    // colon in epoch
		"e40c29:1:a b",                    // space in epoch
		"e40c29:1:" + strings.Repeat("a", MaxEpochLen+1),
		"e40c29:1:\x00", "e40c29:1:é",
		strings.Repeat("e40c29:1:a.", MaxChannels) + "e40c29:1:a", // one entry too many
	} {
		if c, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) = %d claims, want an error", bad, c.Len())
		}
	}
	if c, err := ParseID("e40c29:18446744073709551615:x"); err != nil || c.entries[0].pos.Offset != ^uint64(0) {
		t.Errorf("the largest offset: %v", err)
	}
}

// FuzzParseID checks that any input parses or fails within the bounds,
// that what parses is exactly what the grammar allows (writing the claims
// back gives the input), and that nothing panics.
func FuzzParseID(f *testing.F) {
	f.Add("e40c29:5:abc")
	f.Add("e40c29:5:abc.9a0b11:0:77aa00bb11cc-1a2b3c4d")
	f.Add("e40c29:18446744073709551615:x")
	f.Add("e40c29:1:a:b")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseID(s)
		if err != nil {
			if c.Len() != 0 {
				t.Fatal("claims with an error")
			}
			return
		}
		if len(s) > MaxIDLen || c.Len() > MaxChannels {
			t.Fatalf("accepted past the bounds: %d bytes, %d entries", len(s), c.Len())
		}
		var b []byte
		for i, e := range c.entries {
			if i > 0 {
				b = append(b, '.')
			}
			b = e.tag.append(b)
			b = append(b, ':')
			b = strconv.AppendUint(b, e.pos.Offset, 10)
			b = append(b, ':')
			b = append(b, e.pos.Epoch...)
		}
		if string(b) != s {
			t.Fatalf("ParseID(%q) accepted what writes back as %q", s, b)
		}
	})
}

func TestParseRequest(t *testing.T) {
	id := "e40c29:5:abc"
	r := httptest.NewRequest("GET", "/sse?channel=a&channel=b,org:42&channel=a&token=t", nil)
	r.Header.Set("Last-Event-ID", id)
	req, rerr := ParseRequest(r, 0)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if strings.Join(req.Channels, " ") != "a b org:42" || !req.Resume || req.BadID || req.Claims.Len() != 1 {
		t.Fatalf("got %+v", req)
	}
	if pos, ok := req.Claims.Lookup("a"); !ok || pos != (Position{5, "abc"}) {
		t.Fatalf("claim for a: %+v %v", pos, ok)
	}

	// The query's lastEventId when the header is absent; a bad one claims nothing.
	r = httptest.NewRequest("GET", "/sse?channel=a&lastEventId=garbage", nil)
	if req, rerr = ParseRequest(r, 0); rerr != nil || !req.Resume || !req.BadID || req.Claims.Len() != 0 {
		t.Fatalf("bad query id: %+v %v", req, rerr)
	}
	// No id, no recovery.
	r = httptest.NewRequest("GET", "/sse?channel=a", nil)
	if req, rerr = ParseRequest(r, 0); rerr != nil || req.Resume {
		t.Fatalf("no id: %+v %v", req, rerr)
	}

	for _, tc := range []struct {
		target, code string
		max          int
	}{
		{"/sse", "channel_required", 0},
		{"/sse?channel=", "invalid_channel", 0},
		{"/sse?channel=a,,b", "invalid_channel", 0},
		{"/sse?channel=a%20b", "invalid_channel", 0},
		{"/sse?channel=" + strings.Repeat("x", 201), "invalid_channel", 0},
		{"/sse?channel=%zz", "bad_request", 0},
		{"/sse?channel=a,b,c", "too_many_subscriptions", 2},
		{"/sse?channel=" + manyChannels(MaxChannels+1), "too_many_subscriptions", 1000},
	} {
		_, rerr := ParseRequest(httptest.NewRequest("GET", tc.target, nil), tc.max)
		if rerr == nil || rerr.Code != tc.code || rerr.Status != 400 {
			t.Errorf("%s: got %v, want 400 %s", tc.target, rerr, tc.code)
		}
	}
	if req, rerr := ParseRequest(httptest.NewRequest("GET", "/sse?channel="+manyChannels(MaxChannels), nil), 0); rerr != nil || len(req.Channels) != MaxChannels {
		t.Fatalf("MaxChannels channels refused: %v", rerr)
	}
}

func manyChannels(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("c")
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}

func BenchmarkAppendID(b *testing.B) {
	for _, n := range []int{1, 4, 32} {
		chans := make([]string, n)
		for i := range chans {
			chans[i] = "org:42:" + strconv.Itoa(i)
		}
		c := NewCursor(chans)
		for i := range chans {
			c.Set(i, Position{Offset: 1000, Epoch: "4be1c0d2a9f3-1a2b3c4d"})
		}
		buf := make([]byte, 0, c.IDSize())
		b.Run(strconv.Itoa(n)+"ch", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				c.Advance(i%n, uint64(1001+i))
				buf = c.AppendID(buf[:0])
			}
		})
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	data := []byte(`{"type":"message","channel":"org:42","data":{"activeUsers":12,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"timestamp":"2026-11-22T08:00:00.000Z","offset":42}`)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEvent(buf[:0], "", data)
	}
}

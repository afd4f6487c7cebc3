package protocol

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// seedFrames are real client frames: the seed's documented examples and
// herald's own commands. They seed the fuzzer too.
var seedFrames = []string{
	`{"type":"subscribe","channel":"chat"}`,
	`{"type":"unsubscribe","channel":"chat"}`,
	`{"type":"ping"}`,
	`{"type":"pong"}`,
	`{"type":"message","channel":"chat","data":{"text":"Hello from client"}}`,
	`{"type":"subscribe","channel":"notifications","timestamp":"2025-10-03T21:15:00.000Z"}`,
	`{"type":"message","channel":"org:42","data":[1,2,3],"id":17}`,
	`{"type":"ping","id":"abc"}`,
	`  {"type":"subscribe","channel":"documents","id":-1.5}`,
	`{"type":"subscribe","channel":"org:42","since":{"offset":120,"epoch":"9f2c1a7b3e10"},"events":["message","metrics"]}`,
	`{"type":"subscribe","channel":"org:42","since":{"time":"2026-11-22T08:00:00Z"}}`,
	`{"type":"history","channel":"org:42","limit":2,"id":7}`,
	`{"type":"presence","channel":"org:42"}`,
	`{"type":"message","channel":"org:42","event":"metrics","idempotencyKey":"job-17","data":1}`,
}

func TestDecodeCommand(t *testing.T) {
	cmd, err := DecodeCommand([]byte(`{"type":"message","channel":"chat","data":{"a":1},"id":"x"}`))
	if err != nil || cmd.Type != "message" || cmd.Channel != "chat" || string(cmd.Data) != `{"a":1}` || string(cmd.ID) != `"x"` {
		t.Fatalf("%+v %v", cmd, err)
	}
	cmd, err = DecodeCommand([]byte(`{"type":"message","channel":"c","data":null}`))
	if err != nil || cmd.Data != nil {
		t.Fatalf("null data: %+v %v", cmd, err)
	}
	for raw, code := range map[string]Code{
		``:                          CodeBadJSON,
		`null`:                      CodeBadJSON,
		`[1]`:                       CodeBadJSON,
		`{"type":`:                  CodeBadJSON,
		`{"type":"ping"} x`:         CodeBadJSON,
		`{"type":1}`:                CodeBadRequest,
		`{"type":"ping","id":true}`: CodeBadRequest,
		`{"type":"ping","id":[1]}`:  CodeBadRequest,
		`{"type":"ping","id":"` + strings.Repeat("a", 200) + `"}`: CodeBadRequest,
	} {
		if _, err := DecodeCommand([]byte(raw)); CodeOf(err) != code {
			t.Errorf("%q: got %v, want %s", raw, err, code)
		}
	}
	// A member of the wrong type: the command's channel and a valid id are
	// still returned, for the error frame.
	for raw, want := range map[string]Command{
		`{"type":"subscribe","channel":"chat","id":"s1","events":"message"}`: {Type: "subscribe", Channel: "chat", ID: json.RawMessage(`"s1"`)},
		`{"type":"history","channel":"c","id":7,"limit":"10"}`:               {Type: "history", Channel: "c", ID: json.RawMessage(`7`)},
		`{"type":"ping","id":true}`:                                          {Type: "ping"},
		`{"type":"subscribe","channel":5,"id":"x"}`:                          {Type: "subscribe", ID: json.RawMessage(`"x"`)},
	} {
		cmd, err := DecodeCommand([]byte(raw))
		if CodeOf(err) != CodeBadRequest || cmd.Type != want.Type || cmd.Channel != want.Channel || string(cmd.ID) != string(want.ID) || cmd.Data != nil {
			t.Errorf("%q: got %+v, %v; want %+v and bad_request", raw, cmd, err, want)
		}
	}
}

func TestAppendStringIsValidJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "ctl\x00\x01\x1f", "nl\n\r\t", "ünïcode ✓", "bad\xff\xfeutf8", "\u2028\u2029", "<>&"} {
		b := AppendString(nil, s)
		var out string
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%q encoded as %s: %v", s, b, err)
		}
		if utf8.ValidString(s) && out != s {
			t.Fatalf("%q round-tripped as %q", s, out)
		}
		if !utf8.Valid(b) {
			t.Fatalf("%q encoded to invalid UTF-8", s)
		}
	}
}

func TestEncoders(t *testing.T) {
	ts := time.Date(2025, 10, 3, 21, 15, 0, 123456789, time.FixedZone("CET", 3600))
	cases := map[string]string{
		string(AppendMessage(nil, &Message{Channel: "chat", Data: json.RawMessage(`{"a":1}`), Time: ts, From: "u1"})): `{"type":"message","channel":"chat","data":{"a":1},"timestamp":"2025-10-03T20:15:00.123Z","from":"u1"}`,
		string(AppendMessage(nil, &Message{Channel: "chat", Time: ts})):                                               `{"type":"message","channel":"chat","data":null,"timestamp":"2025-10-03T20:15:00.123Z"}`,
		string(AppendPong(nil, ts, nil)):                                                                               `{"type":"pong","timestamp":"2025-10-03T20:15:00.123Z"}`,
		string(AppendPong(nil, ts, json.RawMessage(`7`))):                                                              `{"type":"pong","timestamp":"2025-10-03T20:15:00.123Z","id":7}`,
		string(AppendAck(nil, TypeSubscribed, "chat", json.RawMessage(`"a"`))):                                         `{"type":"subscribed","channel":"chat","id":"a"}`,
		string(AppendError(nil, CodeForbidden, "no", "org:1", nil)):                                                    `{"type":"error","code":"forbidden","message":"no","channel":"org:1"}`,
		string(AppendConnected(nil, &Connected{ClientID: "c", UserID: "u", Time: ts, PingInterval: 30 * time.Second})): `{"type":"connected","clientId":"c","userId":"u","timestamp":"2025-10-03T20:15:00.123Z","pingInterval":30000}`,
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}

func TestValidChannel(t *testing.T) {
	for name, ok := range map[string]bool{
		"chat": true, "org:42": true, "user:a@b.c": true, "a-b_c.d": true, strings.Repeat("a", 200): true,
		"": false, strings.Repeat("a", 201): false, "a b": false, "a/b": false, "ü": false, "a\x00": false, "*": false,
	} {
		if ValidChannel(name) != ok {
			t.Errorf("ValidChannel(%q) = %v", name, !ok)
		}
	}
}

// exactCases are frames at the edge of what decodeExact takes, with whether
// it takes them; FuzzDecodeCommand starts from them too.
var exactCases = map[string]bool{
	`{}`:                               true,
	` { "type" : "ping" , "id" : 1 } `: true,
	`{"type":"p\u0069ng"}`:             false, // an escape
	`{"channel":"caf\u00e9"}`:          false,
	`{"channel":"café"}`:               true,
	"{\"channel\":\"\xff\"}":           false, // invalid UTF-8: encoding/json makes it U+FFFD
	`{"Type":"ping"}`:                  false, // encoding/json matches names case-insensitively
	`{"type":"ping","extra":1}`:        false,
	`{"type":"a","type":"b"}`:          false,
	`{"type":null,"channel":null}`:     true,
	`{"type":1}`:                       false,
	`{"data":null,"id":null}`:          true,
	`{"data":{"a":[1,"}",{"b":"]"}]},"timestamp":"x"}`: true,
	`{"limit":-0}`:                 true,
	`{"limit":-12}`:                true,
	`{"limit":999999999}`:          true,
	`{"limit":1000000000}`:         false, // may not fit a 32-bit int
	`{"limit":1.5}`:                false,
	`{"limit":1e2}`:                false,
	`{"limit":"2"}`:                false,
	`{"limit":null}`:               true,
	`{"events":null,"since":null}`: true,
	`{"events":["a"]}`:             false,
	`{"since":{"time":"x"}}`:       false,
}

// TestDecodeExact: the frames clients send take the exact path, its edges
// are where they should be, and what it decodes is what encoding/json
// gives.
func TestDecodeExact(t *testing.T) {
	cases := maps.Clone(exactCases)
	for _, s := range seedFrames {
		if !strings.Contains(s, `"since"`) && !strings.Contains(s, `"events"`) {
			cases[s] = true
		}
	}
	for s, want := range cases {
		b := bytes.TrimLeft([]byte(s), " ")
		if !json.Valid(b) {
			t.Fatalf("%s: not valid JSON", s)
		}
		var got Command
		if got.decodeExact(b) != want {
			t.Errorf("%s: decodeExact took it: %v, want %v", s, !want, want)
			continue
		}
		if want {
			checkExact(t, b, got)
		}
	}
}

// checkExact fails t unless got is what encoding/json decodes from b.
func checkExact(t *testing.T, b []byte, got Command) {
	t.Helper()
	var want Command
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("%s: decodeExact took it, encoding/json refuses it: %v", b, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: decodeExact gives %+v, encoding/json %+v", b, got, want)
	}
}

// FuzzDecodeCommand: decoding never panics, whatever decodes re-encodes
// into valid JSON frames, and the exact path agrees with encoding/json.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range seedFrames {
		f.Add([]byte(s))
	}
	for s := range exactCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if o := bytes.TrimLeft(b, " \t\r\n"); len(o) > 0 && o[0] == '{' && json.Valid(o) {
			var exact Command
			if exact.decodeExact(o) {
				checkExact(t, o, exact)
			}
		}
		cmd, err := DecodeCommand(b)
		if err == nil {
			err = cmd.Validate()
		}
		if err != nil {
			if CodeOf(err) == CodeInternal {
				t.Fatalf("decode error without a protocol code: %v", err)
			}
			return
		}
		out := AppendMessage(nil, &Message{Channel: cmd.Channel, Data: cmd.Data, Time: time.Unix(0, 0), From: cmd.Type})
		if !json.Valid(out) {
			t.Fatalf("re-encoded message is not JSON: %s", out)
		}
		out = AppendAck(nil, TypeSubscribed, cmd.Channel, cmd.ID)
		if !json.Valid(out) {
			t.Fatalf("ack is not JSON: %s", out)
		}
	})
}

func BenchmarkAppendMessage(b *testing.B) {
	m := &Message{Channel: "org:42:metrics", Data: json.RawMessage(`{"activeUsers":12,"requestsPerMinute":45,"avgResponseTime":234}`), Time: time.Now(), From: "user@example.com"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], m)
	}
}

func BenchmarkDecodeCommand(b *testing.B) {
	raw := []byte(`{"type":"message","channel":"chat","data":{"text":"Hello from client"},"id":1}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeCommand(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCloseLabel(t *testing.T) {
	for code, want := range map[int]string{
		1000: "1000", 1009: "1009", 1015: "1015", CloseNoPong: "4002", CloseRateLimited: "4029",
		3000: "application", 4999: "application", 4004: "application",
		0: "invalid", 999: "invalid", 1016: "invalid", 2999: "invalid", 5000: "invalid", 65535: "invalid",
	} {
		if got := CloseLabel(code); got != want {
			t.Errorf("CloseLabel(%d) = %q, want %q", code, got, want)
		}
	}
}

func TestTimeJSON(t *testing.T) {
	at := time.Date(2026, 11, 22, 17, 0, 0, 123456789, time.FixedZone("JST", 9*3600))
	b, err := json.Marshal(struct{ At Time }{Time(at)})
	if err != nil || string(b) != `{"At":"2026-11-22T08:00:00.123Z"}` {
		t.Fatalf("got %s, %v", b, err)
	}
}

// TestUnknownTypeMessageNamesEveryCommand: the unknown_type error lists every
// command type a client may send, pong included.
func TestUnknownTypeMessageNamesEveryCommand(t *testing.T) {
	for _, typ := range []string{TypeSubscribe, TypeUnsubscribe, TypeMessage, TypeHistory, TypePresence, TypePing, TypePong} {
		if !regexp.MustCompile(`\b` + typ + `\b`).MatchString(UnknownTypeMessage) {
			t.Errorf("%q does not name %s", UnknownTypeMessage, typ)
		}
	}
}

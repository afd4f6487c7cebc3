package wire

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzSPacket checks the Socket.IO decoder never panics, and that what it
// accepts encodes back to an equivalent packet.
func FuzzSPacket(f *testing.F) {
	for _, s := range []string{
		"0", `0{"token":"123"}`, "0/custom,", `0/custom,{"token":"abc"}`, "1", "1/custom,",
		`2["message",1,"2",{"3":[true]}]`, `2456["message-with-ack",1,"2",{"3":[false]}]`,
		`52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`,
		`52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`,
		`3456[1,"2"]`, `4{"message":"Invalid namespace"}`, "4abc", "2{}", `2abc["x"]`, `2["join:analytics","42"]`,
		`2[ "a\"b" , {"x":["]",{}]} ,-1.5e3, "\u00e9" ,null ]`, "2[\"\xe9\"]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseSPacket(b)
		if err != nil {
			return
		}
		enc := AppendSPacket(nil, p)
		q, err := ParseSPacket(enc)
		if err != nil {
			t.Fatalf("%q decoded, its encoding %q did not: %v", b, enc, err)
		}
		if q.Type != p.Type || q.Nsp != p.Nsp || q.ID != p.ID || q.Attachments != p.Attachments || !bytes.Equal(q.Data, p.Data) {
			t.Fatalf("%q: round trip %+v != %+v", b, q, p)
		}
		if p.Type == SEvent || p.Type == SBinaryEvent {
			name, args, err := EventArgs(p.Data)
			if err != nil {
				t.Fatalf("%q: accepted event whose args do not split: %v", b, err)
			}
			wantName, wantArgs := splitReference(t, p.Data)
			if name != wantName || len(args) != len(wantArgs) {
				t.Fatalf("%q: split into %q %q, encoding/json into %q %q", b, name, args, wantName, wantArgs)
			}
			for i := range args {
				if !bytes.Equal(args[i], wantArgs[i]) {
					t.Fatalf("%q: argument %d is %q, encoding/json's %q", b, i, args[i], wantArgs[i])
				}
			}
		}
	})
}

// splitReference splits an EVENT payload with encoding/json.
func splitReference(t *testing.T, data []byte) (string, []json.RawMessage) {
	var all []json.RawMessage
	var name string
	if err := json.Unmarshal(data, &all); err != nil || len(all) == 0 || json.Unmarshal(all[0], &name) != nil {
		t.Fatalf("%q: encoding/json does not split it: %v", data, err)
	}
	return name, all[1:]
}

// FuzzPayload checks the Engine.IO payload decoder never panics, that every
// packet it yields re-encodes to its bytes, and that the limit holds.
func FuzzPayload(f *testing.F) {
	for _, s := range []string{
		"4hello", "4test1\x1e4test2\x1e4test3", "4hello\x1ebAQIDBA==", "abc", "1", "2probe", "3probe", "5", "6",
		"40\x1e42[\"x\"]", "b", "\x1e",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var out [][]byte
		err := ParsePayload(b, 1<<16, func(p EPacket) error {
			out = append(out, AppendEPacket(nil, p))
			return nil
		})
		if err != nil {
			if len(b) > 1<<16 && err != ErrTooLarge {
				t.Fatalf("oversize payload: %v", err)
			}
			return
		}
		// Text packets re-encode byte for byte; base64 may be re-padded.
		for _, o := range out {
			if len(o) > 0 && o[0] != 'b' && !bytes.Contains(b, o) {
				t.Fatalf("%q: packet %q not in input", b, o)
			}
		}
	})
}

// FuzzJSONString checks AppendJSONString writes what encoding/json does.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "room:1", "a\"<\u2028", "tab\there", "é", "\xff", "a&b>c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Fatalf("%q: %s, encoding/json %s", s, got[1:], want)
		}
	})
}

package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseEPacket(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want EPacket
		err  error
	}{
		{"4hello", EPacket{Type: EMessage, Data: []byte("hello")}, nil},
		{"2probe", EPacket{Type: EPing, Data: []byte("probe")}, nil},
		{"3", EPacket{Type: EPong, Data: []byte{}}, nil},
		{"6", EPacket{Type: ENoop, Data: []byte{}}, nil},
		{"bAQIDBA==", EPacket{Type: EMessage, Data: []byte{1, 2, 3, 4}, Binary: true}, nil},
		{"", EPacket{}, ErrEmpty},
		{"abc", EPacket{}, ErrUnknownType},
		{"7", EPacket{}, ErrUnknownType},
		{"b!!", EPacket{}, ErrBadBase64},
	} {
		got, err := ParseEPacket([]byte(tc.in))
		if !errors.Is(err, tc.err) {
			t.Errorf("%q: err %v, want %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && (got.Type != tc.want.Type || got.Binary != tc.want.Binary || !bytes.Equal(got.Data, tc.want.Data)) {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
		if err == nil {
			if enc := AppendEPacket(nil, got); string(enc) != tc.in {
				t.Errorf("%q: re-encoded as %q", tc.in, enc)
			}
		}
	}
}

func TestParsePayload(t *testing.T) {
	var got []string
	err := ParsePayload([]byte("4hello\x1ebAQIDBA==\x1e3"), 0, func(p EPacket) error {
		got = append(got, string(AppendEPacket(nil, p)))
		return nil
	})
	if err != nil || len(got) != 3 || got[0] != "4hello" || got[1] != "bAQIDBA==" || got[2] != "3" {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := ParsePayload([]byte("4a\x1e"), 0, func(EPacket) error { return nil }); !errors.Is(err, ErrEmpty) {
		t.Errorf("trailing separator: %v, want ErrEmpty", err)
	}
	if err := ParsePayload([]byte("4hello"), 3, func(EPacket) error { t.Fatal("decoded past the limit"); return nil }); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: %v", err)
	}
	if err := ParsePayload(nil, 0, func(EPacket) error { return nil }); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty: %v", err)
	}
}

func TestOpen(t *testing.T) {
	got := string(AppendOpen(nil, "abc", []string{"websocket"}, 300, 200, 1000000))
	want := `0{"sid":"abc","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}`
	if got != want {
		t.Fatalf("got %s", got)
	}
}

func TestParseSPacket(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SPacket
		err  error
	}{
		{"0", SPacket{Type: SConnect, Nsp: "/", ID: -1}, nil},
		{`0{"token":"123"}`, SPacket{Type: SConnect, Nsp: "/", ID: -1, Data: []byte(`{"token":"123"}`)}, nil},
		{"0/custom,", SPacket{Type: SConnect, Nsp: "/custom", ID: -1}, nil},
		{"0/random", SPacket{Type: SConnect, Nsp: "/random", ID: -1}, nil},
		{`0/custom,{"token":"abc"}`, SPacket{Type: SConnect, Nsp: "/custom", ID: -1, Data: []byte(`{"token":"abc"}`)}, nil},
		{"1", SPacket{Type: SDisconnect, Nsp: "/", ID: -1}, nil},
		{"1/custom,", SPacket{Type: SDisconnect, Nsp: "/custom", ID: -1}, nil},
		{`2["message",1,"2",{"3":[true]}]`, SPacket{Type: SEvent, Nsp: "/", ID: -1, Data: []byte(`["message",1,"2",{"3":[true]}]`)}, nil},
		{`2456["message-with-ack",1]`, SPacket{Type: SEvent, Nsp: "/", ID: 456, Data: []byte(`["message-with-ack",1]`)}, nil},
		{`2/admin,7["x"]`, SPacket{Type: SEvent, Nsp: "/admin", ID: 7, Data: []byte(`["x"]`)}, nil},
		{`312[1,"2"]`, SPacket{Type: SAck, Nsp: "/", ID: 12, Data: []byte(`[1,"2"]`)}, nil},
		{`52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, SPacket{Type: SBinaryEvent, Attachments: 2, Nsp: "/", ID: -1,
			Data: []byte(`["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)}, nil},
		{`62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, SPacket{Type: SBinaryAck, Attachments: 2, Nsp: "/", ID: 789,
			Data: []byte(`[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)}, nil},
		{`4{"message":"Invalid namespace"}`, SPacket{Type: SConnectError, Nsp: "/", ID: -1, Data: []byte(`{"message":"Invalid namespace"}`)}, nil},
		{"", SPacket{}, ErrEmpty},
		{"abc", SPacket{}, ErrUnknownType},
		{"7", SPacket{}, ErrUnknownType},
		{"2{}", SPacket{}, ErrBadPayload},
		{"2", SPacket{}, ErrBadPayload},
		{"2[]", SPacket{}, ErrBadPayload},
		{"2[1]", SPacket{}, ErrBadPayload},
		{`2["connect"]`, SPacket{}, ErrBadPayload},
		{`2abc["message-with-ack",1]`, SPacket{}, ErrBadPayload},
		{`299999999999999999["x"]`, SPacket{}, ErrBadAckID},
		{`29007199254740992["x"]`, SPacket{}, ErrBadAckID},
		{`2["x"`, SPacket{}, ErrBadPayload},
		{`3`, SPacket{}, ErrBadPayload},
		{`3{}`, SPacket{}, ErrBadPayload},
		{`0[]`, SPacket{}, ErrBadPayload},
		{`1{}`, SPacket{}, ErrBadPayload},
		{`5["x"]`, SPacket{}, ErrBadAttachment},
		{`511-["x"]`, SPacket{}, ErrBadAttachment},
		{`5a-["x"]`, SPacket{}, ErrBadAttachment},
		{"0/a b,", SPacket{}, ErrBadNamespace},
		{`05{}`, SPacket{}, ErrBadPayload},
	} {
		got, err := ParseSPacket([]byte(tc.in))
		if !errors.Is(err, tc.err) {
			t.Errorf("%q: err %v, want %v", tc.in, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if got.Type != tc.want.Type || got.Nsp != tc.want.Nsp || got.ID != tc.want.ID || got.Attachments != tc.want.Attachments || !bytes.Equal(got.Data, tc.want.Data) {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestEncodeSPacket(t *testing.T) {
	if got := string(AppendEvent(nil, "/", -1, "message-back", []byte(`1`), []byte(`"2"`))); got != `2["message-back",1,"2"]` {
		t.Errorf("event: %s", got)
	}
	if got := string(AppendEvent(nil, "/custom", 3, "auth", []byte(`{}`))); got != `2/custom,3["auth",{}]` {
		t.Errorf("event with nsp and id: %s", got)
	}
	p := SPacket{Type: SBinaryAck, Attachments: 2, Nsp: "/", ID: 789, Data: []byte(`[{"_placeholder":true,"num":0}]`)}
	if got := string(AppendSPacket(nil, p)); got != `62-789[{"_placeholder":true,"num":0}]` {
		t.Errorf("binary ack: %s", got)
	}
	if got := string(AppendJSONString(nil, "a\"<\u2028")); got != `"a\"\u003c\u2028"` {
		t.Errorf("string: %s", got)
	}
}

func TestEventArgs(t *testing.T) {
	name, args, err := EventArgs([]byte(`["join:analytics","42",{"a":1}]`))
	if err != nil || name != "join:analytics" || len(args) != 2 || string(args[0]) != `"42"` || string(args[1]) != `{"a":1}` {
		t.Fatalf("%q %q %v", name, args, err)
	}
	if _, _, err := EventArgs([]byte(`[1]`)); err == nil {
		t.Fatal("numeric name accepted")
	}
}

func BenchmarkEventArgs(b *testing.B) {
	data := []byte(`["subscribe","org:42"]`)
	b.ReportAllocs()
	for b.Loop() {
		if name, args, err := EventArgs(data); err != nil || name != "subscribe" || len(args) != 1 {
			b.Fatal(name, args, err)
		}
	}
}

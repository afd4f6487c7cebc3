package socketio

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/protocol"
)

// FuzzDecodeNative checks decodeNative decodes what encoding/json does,
// and scans herald's flat replies without it.
func FuzzDecodeNative(f *testing.F) {
	rec, id := true, json.RawMessage("7")
	for _, s := range []string{
		string(protocol.AppendSubscribed(nil, "org:42", protocol.Position{Offset: 12, Epoch: "e1"}, &rec, id)),
		string(protocol.AppendSubscribed(nil, "room", protocol.Position{Epoch: "ab"}, nil, json.RawMessage(`"x"`))),
		string(protocol.AppendPublished(nil, "room", protocol.Position{Offset: 3, Epoch: "ab"}, true, id)),
		`{"type":"error","code":"forbidden","message":"no","channel":"c","id":3}`,
		`{"type":"message","channel":"c","data":{"a":[1]},"timestamp":"2026-12-08T02:00:00.5Z","offset":4}`,
		`{"type":"history","publications":[{"data":1}],"truncated":true}`, `{ "type" : "x" , "id" : null }`,
		`{"recovered":null,"offset":-1}`, `{"Type":"x"}`, `{"type":"a\"b"}`, `{"offset":1e3}`, `{"data":null}`,
		`{}`, `{,}`, `{"type":"x",}`, `[1]`, `{"timestamp":12}`, `{"type":"\xff"}`, "{\"type\":\"x\"}\u00a0",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var want nativeFrame
		wantErr := json.Unmarshal(frame, &want)
		var got nativeFrame
		err := decodeNative(frame, &got)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%q: error %v, encoding/json's %v", frame, err, wantErr)
		}
		if err != nil {
			return
		}
		if !sameFrame(&got, &want) {
			t.Fatalf("%q: %+v, encoding/json %+v", frame, got, want)
		}
	})
}

func sameFrame(a, b *nativeFrame) bool {
	if (a.Recovered == nil) != (b.Recovered == nil) || a.Recovered != nil && *a.Recovered != *b.Recovered {
		return false
	}
	if !a.Timestamp.Equal(b.Timestamp) {
		return false
	}
	x, y := *a, *b
	x.Recovered, y.Recovered, x.Timestamp, y.Timestamp = nil, nil, time.Time{}, time.Time{}
	return reflect.DeepEqual(x, y)
}

// TestDecodeNativeFlat checks herald's subscribe answer is scanned: no
// allocation but its strings'.
func TestDecodeNativeFlat(t *testing.T) {
	rec := false
	doc := protocol.AppendSubscribed(nil, "org:42", protocol.Position{Offset: 12, Epoch: "e1"}, &rec, json.RawMessage("7"))
	var f nativeFrame
	if !decodeFlat(doc, &f) {
		t.Fatalf("%s not scanned", doc)
	}
	if f.Type != protocol.TypeSubscribed || f.Channel != "org:42" || f.Offset != 12 || f.Epoch != "e1" || f.Recovered == nil || *f.Recovered || string(f.ID) != "7" {
		t.Fatalf("%s: %+v", doc, f)
	}
}

func BenchmarkDecodeNative(b *testing.B) {
	doc := protocol.AppendSubscribed(nil, "org:42", protocol.Position{Offset: 12, Epoch: "0123456789abcdef"}, nil, json.RawMessage("7"))
	b.ReportAllocs()
	for b.Loop() {
		var f nativeFrame
		if decodeNative(doc, &f) != nil {
			b.Fatal("not decoded")
		}
	}
}

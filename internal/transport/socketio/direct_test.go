package socketio

import (
	"bytes"
	"net/url"
	"testing"
)

// FuzzTakesRaw checks TakesRaw's query scan decides as url.ParseQuery
// does.
func FuzzTakesRaw(f *testing.F) {
	for _, s := range []string{
		"/socket.io/?EIO=4&transport=websocket", "/socket.io?EIO=4&transport=websocket&token=abc",
		"/socket.io/?EIO=4&transport=websocket&sid=x", "/socket.io/?EIO=3&transport=websocket",
		"/socket.io/?transport=polling&EIO=4", "/socket.io/?EIO=4&EIO=3&transport=websocket",
		"/socket.io/?E%49O=4&transport=websocket", "/socket.io/?EIO=4;x&transport=websocket",
		"/socket.io/?&&EIO=4&=x&transport=websocket&sid", "/other/?EIO=4&transport=websocket", "/socket.io/",
	} {
		f.Add([]byte(s))
	}
	s := &Server{}
	const path = "/socket.io/"
	f.Fuzz(func(t *testing.T, target []byte) {
		want := false
		if p, q, ok := bytes.Cut(target, []byte("?")); ok && (string(p) == path || string(p) == "/socket.io") {
			v, err := url.ParseQuery(string(q))
			want = err == nil && v.Get("EIO") == "4" && v.Get("transport") == "websocket" && !v.Has("sid")
		}
		if got := s.TakesRaw(path, target); got != want {
			t.Fatalf("TakesRaw(%q) = %v, url.ParseQuery says %v", target, got, want)
		}
	})
}

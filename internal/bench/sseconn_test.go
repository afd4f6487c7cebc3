package bench

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

func TestReadEventAsFrames(t *testing.T) {
	long := strings.Repeat("y", 700) // longer than the read buffer
	stream := "retry: 1500\n\n" +
		"event: herald/connected\ndata: {\"type\":\"connected\"}\n\n" +
		":\n" +
		"id: abc\ndata: {\"type\":\"message\",\n" + "data: \"data\":1}\n\n" +
		"data: \"" + long + "\"\n\n"
	c := &wsConn{sse: true, br: bufio.NewReaderSize(strings.NewReader(stream), 256)}
	for _, want := range []string{`{"type":"connected"}`, "{\"type\":\"message\",\n\"data\":1}", `"` + long + `"`} {
		op, p, err := c.readFrame()
		if err != nil || op != ws.OpText || string(p) != want {
			t.Fatalf("readFrame = %v %q %v, want %q", op, p, err, want)
		}
	}
	if _, _, err := c.readFrame(); err != io.EOF {
		t.Fatalf("at the end: %v, want EOF", err)
	}
}

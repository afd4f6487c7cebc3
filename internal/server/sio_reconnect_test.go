package server_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestSocketIODirectDisconnectThenConnect: a direct socket that sends
// DISCONNECT and another packet in one write (both frames read in one
// batch: another CONNECT, an event, a second DISCONNECT, a pong) is ended
// by the DISCONNECT; what follows it is not served (and the server does
// not fail on it), and the server goes on serving.
func TestSocketIODirectDisconnectThenConnect(t *testing.T) {
	ts := start(t, nil)
	for _, second := range []string{`40{"token":"` + token(t, "u1", "42") + `"}`, `40`, `421["subscribe","org:42"]`, `42["publish",{"channel":"org:42"}]`, `41`, `3`} {
		c := ts.dialSIO()
		c.send(`40{"token":"` + token(t, "u1", "42") + `"}`)
		if p := c.read(); !strings.HasPrefix(p, `40{"sid":"`) {
			t.Fatalf("connect answer %q", p)
		}
		var both bytes.Buffer
		for _, pkt := range []string{"41", second} {
			f := ws.MaskFrame(ws.NewTextFrame([]byte(pkt)))
			if err := ws.WriteFrame(&both, f); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.conn.UnderlyingConn().Write(both.Bytes()); err != nil {
			t.Fatal(err)
		}
		for {
			_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, _, err := c.conn.ReadMessage(); err != nil {
				break
			}
		}
		eventually(t, 10*time.Second, "the hub client to go", func() bool { return ts.srv.Hub().NumClients() == 0 })
	}
	d := ts.dialSIO()
	d.send(`40{"token":"` + token(t, "u2", "42") + `"}`)
	if p := d.read(); !strings.HasPrefix(p, `40{"sid":"`) {
		t.Fatalf("a new socket after: %q", p)
	}
}

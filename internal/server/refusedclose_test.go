package server_test

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

// TestRefusedMessageCloseReachesASenderStillSending: when herald refuses a
// message as it arrives (too big: 1009; over the memory budget: 4009), the
// client may still be sending it, and more. Its close frame must reach a
// client that reads only once it has sent everything: the server reads on
// and drops what comes after its refusal. It used to stop reading, so the
// client's writes blocked, and the bytes left unread in the server's socket
// when it ended the connection made the kernel answer with a reset, which
// destroyed the close frame the client had not read yet.
func TestRefusedMessageCloseReachesASenderStillSending(t *testing.T) {
	native := func(t *testing.T, ts *testServer) (net.Conn, func() int) {
		nc, br := rawUpgrade(t, ts, "token="+url.QueryEscape(token(t, "mallory", "")), nil)
		readJSON(t, br) // connected
		return nc, func() int { return closeCode(br) }
	}
	// sio dials a Socket.IO socket on WebSocket from the start, connected
	// to "/" or not.
	sio := func(connect bool) func(*testing.T, *testServer) (net.Conn, func() int) {
		return func(t *testing.T, ts *testServer) (net.Conn, func() int) {
			c := ts.dialSIO()
			if connect {
				c.send(`40{"token":"` + token(t, "mallory", "") + `"}`)
				if p := c.read(); !strings.HasPrefix(p, `40{"sid":"`) {
					t.Fatalf("connect answer %q", p)
				}
			}
			return c.conn.UnderlyingConn(), func() int {
				_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
				for {
					if _, _, err := c.conn.ReadMessage(); err != nil {
						var ce *websocket.CloseError
						if errors.As(err, &ce) {
							return ce.Code
						}
						return -1
					}
				}
			}
		}
	}
	for _, tc := range []struct {
		name      string
		want      int
		configure func(*config.Config)
		dial      func(*testing.T, *testServer) (net.Conn, func() int)
	}{
		{"TooBig", 1009, func(c *config.Config) { c.MaxMessageBytes = 64 << 10 }, native},
		{"OverBudget", 4009, func(c *config.Config) {
			c.MaxMessageBytes = 1 << 20
			c.MaxUserQueuedBytes = 256 << 10
		}, native},
		// A Socket.IO socket on WebSocket from the start, once connected,
		// is read by the same code; before its CONNECT, by its own, which
		// reads on and discards the same way.
		{"SocketIOTooBig", 1009, func(c *config.Config) { c.MaxMessageBytes = 64 << 10 }, sio(true)},
		{"SocketIOTooBigBeforeConnect", 1009, func(c *config.Config) { c.MaxMessageBytes = 64 << 10 }, sio(false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := start(t, tc.configure)
			nc, closed := tc.dial(t, ts)
			// A fixed send buffer: the two sockets hold far less than what
			// is sent, so the writes complete only if the server reads on.
			if err := nc.(*net.TCPConn).SetWriteBuffer(64 << 10); err != nil {
				t.Fatal(err)
			}
			// Masked text frames of 1 MiB each (the first is refused),
			// written without reading anything.
			const frames, size = 4, 1 << 20
			frame := append([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, make([]byte, size)...)
			putUint64(frame[2:10], size)
			_ = nc.SetWriteDeadline(time.Now().Add(30 * time.Second)) // a failure bound
			for i := range frames {
				if _, err := nc.Write(frame); err != nil {
					t.Fatalf("writing frame %d: %v (the server stopped reading after its refusal)", i, err)
				}
			}
			_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			if code := closed(); code != tc.want {
				t.Fatalf("closed with %d, want %d (-1: no close frame)", code, tc.want)
			}
			nc.Close() // the server reads its end: the connection ends now, not after the close grace
		})
	}
}

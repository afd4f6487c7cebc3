package server_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/server/servertest"
)

// FuzzSocketIOPackets sends a direct Socket.IO socket a sequence of
// packets (one per line of the input; "TOKEN" stands for a valid token),
// each its own WebSocket frame, all in one write, so they are read in one
// batch; then it hangs up. The server must neither fail nor stop serving
// whatever the sequence: a panic on the poller's goroutine ends the test
// process, and every input ends with a fresh socket that must connect.
func FuzzSocketIOPackets(f *testing.F) {
	for _, seed := range []string{
		"40{\"token\":\"TOKEN\"}\n41\n40{\"token\":\"TOKEN\"}",
		"40{\"token\":\"TOKEN\"}\n41\n40",
		"40{\"token\":\"TOKEN\"}\n421[\"subscribe\",\"org:42\"]\n41\n422[\"subscribe\",\"org:42\"]",
		"40{\"token\":\"TOKEN\"}\n42[\"join:analytics\",42]\n42[\"publish\",{\"channel\":\"org:42\",\"data\":1}]\n41",
		"40{\"token\":\"TOKEN\",\"pid\":\"p\",\"offset\":\"~org:42|e|1\"}\n41\n40",
		"40{\"token\":\"TOKEN\"}\n431[1]\n3\n2\n6\n5\n1",
		"40\n40{\"token\":\"TOKEN\"}\n40{\"token\":\"TOKEN\"}",
		"451-[\"x\",{\"_placeholder\":true,\"num\":0}]\n40{\"token\":\"TOKEN\"}",
		"41\n41\n40/custom,",
	} {
		f.Add(seed)
	}
	s := servertest.Start(f, func(c *config.Config) { c.RateLimit, c.MaxUserConnections = 0, 0 })
	tok, err := auth.Mint([]byte(servertest.Secret), auth.Identity{UserID: "u1", OrgID: "42"}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var frames bytes.Buffer
		for _, pkt := range strings.Split(strings.ReplaceAll(in, "TOKEN", tok), "\n") {
			_ = ws.WriteFrame(&frames, ws.MaskFrame(ws.NewTextFrame([]byte(pkt))))
		}
		conn := dialDirect(t, s.Addr)
		_, _ = conn.Write(frames.Bytes())
		conn.Close()
		check := dialDirect(t, s.Addr)
		defer check.Close()
		_ = ws.WriteFrame(check, ws.MaskFrame(ws.NewTextFrame([]byte(`40{"token":"`+tok+`"}`))))
		if p := readFrame(t, check); !strings.HasPrefix(p, `40{"sid":"`) {
			t.Fatalf("a fresh socket after %q: %q", in, p)
		}
	})
}

// directConn is a raw Socket.IO socket over WebSocket: reads come from
// what the dial buffered, then the connection.
type directConn struct {
	net.Conn
	r io.Reader
}

func (c directConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// dialDirect opens a Socket.IO socket over WebSocket and reads its open
// packet.
func dialDirect(t *testing.T, addr string) directConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, "ws://"+addr+"/socket.io/?EIO=4&transport=websocket")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := directConn{Conn: conn, r: conn}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if p := readFrame(t, c); !strings.HasPrefix(p, `0{"sid":"`) {
		t.Fatalf("open packet %q", p)
	}
	return c
}

// readFrame reads one frame's payload from the server.
func readFrame(t *testing.T, r io.Reader) string {
	t.Helper()
	f, err := ws.ReadFrame(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(f.Payload)
}

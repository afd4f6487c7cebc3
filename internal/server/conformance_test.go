package server_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

// The conformance echo endpoint (--conformance-echo-path) driven through
// RFC 6455's cases, on raw frames: what Autobahn|Testsuite checks
// (docs/conformance.md), here in the test command. Each case runs on a
// connection of its own, through the fast upgrade path, and the table once
// more through net/http's (an upgrade on a keep-alive connection).

const echoPath = "/echo"

// echoServer runs herald with the echo endpoint and a small message limit.
func echoServer(t *testing.T) *testServer {
	return start(t, func(c *config.Config) {
		c.ConformanceEchoPath = echoPath
		c.MaxMessageBytes = 64 << 10
	})
}

// frame is a client frame, masked when written unless unmasked.
type frame struct {
	fin      bool
	rsv      byte // RSV1..3 as bits 4..6 of the first byte
	op       ws.OpCode
	payload  []byte
	unmasked bool
}

func (f frame) bytes() []byte {
	h := ws.Header{Fin: f.fin, Rsv: f.rsv, OpCode: f.op, Length: int64(len(f.payload)), Masked: !f.unmasked}
	p := bytes.Clone(f.payload)
	if h.Masked {
		h.Mask = [4]byte{1, 2, 3, 4}
		ws.Cipher(p, h.Mask, 0)
	}
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, h)
	b.Write(p)
	return b.Bytes()
}

func text(s string) frame               { return frame{fin: true, op: ws.OpText, payload: []byte(s)} }
func binary(b []byte) frame             { return frame{fin: true, op: ws.OpBinary, payload: b} }
func part(op ws.OpCode, s string) frame { return frame{op: op, payload: []byte(s)} }
func last(s string) frame               { return frame{fin: true, op: ws.OpContinuation, payload: []byte(s)} }
func ping(s string) frame               { return frame{fin: true, op: ws.OpPing, payload: []byte(s)} }
func closeWith(code int, reason string) frame {
	return frame{fin: true, op: ws.OpClose, payload: ws.NewCloseFrameBody(ws.StatusCode(code), reason)}
}

// reply is a frame the server sends: its opcode and payload (for a close,
// the code alone is compared).
type reply struct {
	op      ws.OpCode
	payload string
	code    int
}

func echoed(op ws.OpCode, s string) reply { return reply{op: op, payload: s} }
func closed(code int) reply               { return reply{op: ws.OpClose, code: code} }

// deflate compresses s as one permessage-deflate message (RFC 7692 §7.2.1).
func deflate(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(s))
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

type echoCase struct {
	name     string
	compress bool // offer permessage-deflate
	send     []frame
	want     []reply // then the connection ends (after a close)
}

func echoCases(t *testing.T) []echoCase {
	big := strings.Repeat("ab", 40000) // 80 KB: over the 64 KiB limit
	long := strings.Repeat("herald ", 5000)
	z := deflate(t, long)
	return []echoCase{
		{name: "text", send: []frame{text("Hello"), text("")}, want: []reply{echoed(ws.OpText, "Hello"), echoed(ws.OpText, "")}},
		{name: "text of every length form", send: []frame{text(strings.Repeat("x", 125)), text(strings.Repeat("y", 126)), text(strings.Repeat("z", 65535))},
			want: []reply{echoed(ws.OpText, strings.Repeat("x", 125)), echoed(ws.OpText, strings.Repeat("y", 126)), echoed(ws.OpText, strings.Repeat("z", 65535))}},
		{name: "binary", send: []frame{binary([]byte{0, 0xff, 0xfe, 1})}, want: []reply{echoed(ws.OpBinary, "\x00\xff\xfe\x01")}},
		{name: "UTF-8 text", send: []frame{text("κόσμε ∮ 𝄞")}, want: []reply{echoed(ws.OpText, "κόσμε ∮ 𝄞")}},
		{name: "fragmented text", send: []frame{part(ws.OpText, "frag"), part(ws.OpContinuation, "men"), last("ted")}, want: []reply{echoed(ws.OpText, "fragmented")}},
		{name: "fragmented binary with empty fragments", send: []frame{part(ws.OpBinary, ""), part(ws.OpContinuation, "\x01"), last("")}, want: []reply{echoed(ws.OpBinary, "\x01")}},
		{name: "ping between fragments", send: []frame{part(ws.OpText, "a"), ping("p"), last("b")}, want: []reply{echoed(ws.OpPong, "p"), echoed(ws.OpText, "ab")}},
		{name: "ping with 125 bytes", send: []frame{ping(strings.Repeat("p", 125))}, want: []reply{echoed(ws.OpPong, strings.Repeat("p", 125))}},
		{name: "unsolicited pong", send: []frame{{fin: true, op: ws.OpPong, payload: []byte("u")}, text("after")}, want: []reply{echoed(ws.OpText, "after")}},
		{name: "UTF-8 split across fragments", send: []frame{part(ws.OpText, "\xce"), last("\xba")}, want: []reply{echoed(ws.OpText, "κ")}},
		{name: "close 1000", send: []frame{closeWith(1000, "bye")}, want: []reply{closed(1000)}},
		{name: "close without payload", send: []frame{{fin: true, op: ws.OpClose}}, want: []reply{closed(1000)}},
		{name: "close 3000 and 4999", send: []frame{closeWith(4999, "")}, want: []reply{closed(4999)}},
		{name: "text after close", send: []frame{closeWith(1000, ""), text("late")}, want: []reply{closed(1000)}},
		// Failures: the connection is closed with RFC 6455's code.
		{name: "invalid UTF-8", send: []frame{text("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")}, want: []reply{closed(1007)}},
		{name: "invalid UTF-8 in a fragment", send: []frame{part(ws.OpText, "ok"), last("\xff")}, want: []reply{closed(1007)}},
		{name: "close code 999", send: []frame{closeWith(999, "")}, want: []reply{closed(1002)}},
		{name: "close code 1004", send: []frame{closeWith(1004, "")}, want: []reply{closed(1002)}},
		{name: "close code 1005", send: []frame{closeWith(1005, "")}, want: []reply{closed(1002)}},
		{name: "close code 1016", send: []frame{closeWith(1016, "")}, want: []reply{closed(1002)}},
		{name: "close code 2999", send: []frame{closeWith(2999, "")}, want: []reply{closed(1002)}},
		{name: "close code 5000", send: []frame{closeWith(5000, "")}, want: []reply{closed(1002)}},
		{name: "close with one byte", send: []frame{{fin: true, op: ws.OpClose, payload: []byte{3}}}, want: []reply{closed(1002)}},
		{name: "close reason not UTF-8", send: []frame{closeWith(1000, "\xff")}, want: []reply{closed(1002)}},
		{name: "ping of 126 bytes", send: []frame{ping(strings.Repeat("p", 126))}, want: []reply{closed(1002)}},
		{name: "fragmented ping", send: []frame{{op: ws.OpPing, payload: []byte("a")}, last("b")}, want: []reply{closed(1002)}},
		{name: "reserved opcode 3", send: []frame{{fin: true, op: 3}}, want: []reply{closed(1002)}},
		{name: "reserved control opcode 11", send: []frame{{fin: true, op: 11}}, want: []reply{closed(1002)}},
		{name: "RSV1 without an extension", send: []frame{{fin: true, rsv: 4, op: ws.OpText, payload: []byte("x")}}, want: []reply{closed(1002)}},
		{name: "RSV2", send: []frame{{fin: true, rsv: 2, op: ws.OpText, payload: []byte("x")}}, want: []reply{closed(1002)}},
		{name: "continuation without a start", send: []frame{last("x")}, want: []reply{closed(1002)}},
		{name: "text inside a fragmented message", send: []frame{part(ws.OpText, "a"), text("b")}, want: []reply{closed(1002)}},
		{name: "unmasked frame", send: []frame{{fin: true, op: ws.OpText, payload: []byte("x"), unmasked: true}}, want: []reply{closed(1002)}},
		{name: "message over the limit", send: []frame{text(big)}, want: []reply{closed(1009)}},
		{name: "fragments over the limit", send: []frame{part(ws.OpText, big[:40000]), last(big[40000:])}, want: []reply{closed(1009)}},
		// permessage-deflate (RFC 7692): compressed messages come back whole.
		{name: "compressed text", compress: true, send: []frame{{fin: true, rsv: 4, op: ws.OpText, payload: z}, text("plain")},
			want: []reply{echoed(ws.OpText, long), echoed(ws.OpText, "plain")}},
		{name: "compressed fragmented", compress: true, send: []frame{{rsv: 4, op: ws.OpText, payload: z[:10]}, {fin: true, op: ws.OpContinuation, payload: z[10:]}},
			want: []reply{echoed(ws.OpText, long)}},
		{name: "compressed binary", compress: true, send: []frame{{fin: true, rsv: 4, op: ws.OpBinary, payload: deflate(t, "\x00\x01\x02")}}, want: []reply{echoed(ws.OpBinary, "\x00\x01\x02")}},
		{name: "RSV1 on a continuation", compress: true, send: []frame{{rsv: 4, op: ws.OpText, payload: z[:10]}, {fin: true, rsv: 4, op: ws.OpContinuation, payload: z[10:]}}, want: []reply{closed(1002)}},
		{name: "RSV1 on a ping", compress: true, send: []frame{{fin: true, rsv: 4, op: ws.OpPing}}, want: []reply{closed(1002)}},
		{name: "compressed invalid UTF-8", compress: true, send: []frame{{fin: true, rsv: 4, op: ws.OpText, payload: deflate(t, "a\xffb")}}, want: []reply{closed(1007)}},
		{name: "compressed bomb", compress: true, send: []frame{{fin: true, rsv: 4, op: ws.OpText, payload: deflate(t, strings.Repeat("a", 1<<20))}}, want: []reply{closed(1009)}},
	}
}

func TestConformanceEcho(t *testing.T) {
	ts := echoServer(t)
	tok := url.QueryEscape(token(t, "autobahn", ""))
	for _, path := range []string{"fast", "net/http"} {
		for _, c := range echoCases(t) {
			t.Run(path+"/"+c.name, func(t *testing.T) {
				conn, br := dialEcho(t, ts, tok, c.compress, path == "net/http")
				defer conn.Close()
				var out []byte
				for _, f := range c.send {
					out = append(out, f.bytes()...)
				}
				if _, err := conn.Write(out); err != nil {
					t.Fatal(err)
				}
				for i, w := range c.want {
					got, err := readReply(conn, br)
					if err != nil {
						t.Fatalf("reply %d: %v, want %s", i, err, w)
					}
					if got != w {
						t.Fatalf("reply %d: %s, want %s", i, got, w)
					}
				}
				// The client closes (or answers the server's close, as RFC
				// 6455 asks); then the server ends the connection and sends
				// nothing more.
				_, err := conn.Write(closeWith(1000, "").bytes())
				if n := len(c.want); err == nil && (n == 0 || c.want[n-1].op != ws.OpClose) {
					if got, err := readReply(conn, br); err != nil || got != closed(1000) {
						t.Fatalf("close: %s (%v), want close 1000", got, err)
					}
				}
				if got, err := readReply(conn, br); err == nil {
					t.Fatalf("after the close: %s", got)
				}
			})
		}
	}
}

func (r reply) String() string {
	if r.op == ws.OpClose {
		return fmt.Sprintf("close %d", r.code)
	}
	p := r.payload
	if len(p) > 40 {
		p = fmt.Sprintf("%.40q… (%d bytes)", p, len(p))
	} else {
		p = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("op %d %s", r.op, p)
}

// readReply reads one server frame: unmasked, final, no RSV bit (the echo
// is never compressed), whole.
func readReply(conn net.Conn, br *bufio.Reader) (reply, error) {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure bound
	h, err := ws.ReadHeader(br)
	if err != nil {
		return reply{}, err
	}
	if h.Masked || !h.Fin || h.Rsv != 0 {
		return reply{}, fmt.Errorf("server frame %+v: masked, fragmented or with RSV bits", h)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(br, p); err != nil {
		return reply{}, err
	}
	if h.OpCode == ws.OpClose {
		code, _ := ws.ParseCloseFrameData(p)
		return closed(int(code)), nil
	}
	return echoed(h.OpCode, string(p)), nil
}

// dialEcho upgrades a connection to the echo endpoint; overHTTP first sends
// a plain request on it, so that the upgrade goes through net/http.
func dialEcho(t *testing.T, ts *testServer, tok string, compress, overHTTP bool) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	if overHTTP {
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", ts.addr)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	ext := ""
	if compress {
		ext = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
	}
	fmt.Fprintf(conn, "GET %s?token=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n", echoPath, tok, ts.addr, ext)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	if got := strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate"); got != compress {
		t.Fatalf("permessage-deflate negotiated: %v, want %v", got, compress)
	}
	return conn, br
}

// The echo endpoint is off unless configured: its path is then nothing
// but a 404, and /ws speaks the protocol as ever (a binary frame refused).
func TestConformanceEchoOff(t *testing.T) {
	ts := start(t, nil)
	tok := url.QueryEscape(token(t, "autobahn", ""))
	st, _ := ts.dialStatus("ws://"+ts.addr+echoPath+"?token="+tok, nil)
	if st != http.StatusNotFound {
		t.Fatalf("echo path with the endpoint off: %d, want 404", st)
	}
	on := echoServer(t)
	c := on.dial("alice", "")
	if err := c.conn.WriteMessage(websocket.BinaryMessage, []byte{1}); err != nil {
		t.Fatal(err)
	}
	c.expectError("binary_not_supported")
}

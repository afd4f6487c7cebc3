package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// maxFrame bounds a frame the generator accepts from the server.
const maxFrame = 16 << 20

// target is a validated loopback endpoint: every address in it is a literal
// loopback IP, so no name lookup ever happens on the way.
type target struct {
	hostPort string // "127.0.0.1:8080" or "[::1]:8080"
	wsURL    string // ws://hostPort/path
	apiBase  string // http://hostPort of the server API
}

// errNotLoopback is returned for any target outside 127.0.0.0/8 and ::1.
var errNotLoopback = errors.New("bench only targets loopback addresses (127.0.0.0/8 or ::1)")

// loopbackHostPort checks that hostport names a loopback address and returns
// it with the host as a literal IP. "localhost" is taken as 127.0.0.1; any
// other name is refused without being resolved.
func loopbackHostPort(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", hostport, err)
	}
	if port == "" {
		return "", fmt.Errorf("address %q: missing port", hostport)
	}
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("%w: refusing %q", errNotLoopback, hostport)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// parseTarget validates the WebSocket URL and the API base URL (derived from
// the WebSocket URL when apiURL is empty).
func parseTarget(wsURL, apiURL string) (target, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return target{}, fmt.Errorf("bad --url: %w", err)
	}
	if u.Scheme != "ws" {
		return target{}, fmt.Errorf("bad --url %q: scheme must be ws:// (loopback only, no TLS)", wsURL)
	}
	hp := u.Host
	if u.Port() == "" {
		hp = net.JoinHostPort(u.Hostname(), "80")
	}
	hp, err = loopbackHostPort(hp)
	if err != nil {
		return target{}, err
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/ws"
	}
	t := target{hostPort: hp, wsURL: "ws://" + hp + path, apiBase: "http://" + hp}
	if apiURL != "" {
		a, err := url.Parse(apiURL)
		if err != nil || a.Scheme != "http" {
			return target{}, fmt.Errorf("bad --api-url %q: want http://HOST:PORT", apiURL)
		}
		ahp := a.Host
		if a.Port() == "" {
			ahp = net.JoinHostPort(a.Hostname(), "80")
		}
		if ahp, err = loopbackHostPort(ahp); err != nil {
			return target{}, err
		}
		t.apiBase = "http://" + ahp
	}
	return t, nil
}

// loopbackDialer returns a dial function that connects only to loopback
// addresses, from local (nil: any) as source address.
func loopbackDialer(local net.IP, timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		hp, err := loopbackHostPort(addr)
		if err != nil {
			return nil, err
		}
		return d.DialContext(ctx, "tcp", hp)
	}
}

// wsConn is a client WebSocket connection with a lean reader: frames are read
// with ws.ReadHeaderBuffer into a per-connection header buffer and payloads
// are returned as views into the bufio.Reader's buffer, so reading a frame
// allocates nothing. With permessage-deflate negotiated (deflate), frames
// with RSV1 set are inflated into a pooled buffer (see inflater); frames
// without it stay on the fast path.
type wsConn struct {
	nc      net.Conn
	br      *bufio.Reader
	hdr     []byte // ws.ReadHeaderBuffer's buffer (12 bytes)
	pending int    // bytes of the last frame still to discard from br
	scratch []byte // payloads larger than br's buffer

	deflate bool      // permessage-deflate (no context takeover) negotiated
	inf     *inflater // holds the last inflated payload until the next readFrame

	// Set by every successful readFrame: the frame's size on the wire
	// (header + payload as received) and whether it was compressed.
	lastWire       int
	lastCompressed bool

	wmu  sync.Mutex
	wbuf []byte
	rng  uint64 // xorshift state for masks
}

// newWSConn wraps an upgraded connection. br may be nil.
func newWSConn(nc net.Conn, br *bufio.Reader, readBuf int, seed uint64) *wsConn {
	if br == nil {
		br = bufio.NewReaderSize(nc, readBuf)
	}
	return &wsConn{nc: nc, br: br, hdr: make([]byte, 2, ws.MaxHeaderSize-2), rng: seed | 1}
}

// dialError carries the HTTP status of a refused upgrade.
type dialError struct {
	status int
	body   string
	err    error
}

func (e *dialError) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("upgrade refused: HTTP %d %s", e.status, e.body)
	}
	return e.err.Error()
}

func (e *dialError) Unwrap() error { return e.err }

// deflateParams is what the generator offers with --compress: permessage-deflate
// without context takeover in either direction, so every compressed message
// inflates on its own (and the server can compress a publication once for
// all its subscribers).
var deflateParams = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}

// errContextTakeover refuses a server that accepted permessage-deflate but
// kept its compression context: the bench's stateless inflater cannot
// decode that.
var errContextTakeover = errors.New("server accepted permessage-deflate without server_no_context_takeover")

// dialWS opens a WebSocket to t with a bearer token. With compress it offers
// permessage-deflate (no context takeover); whether the server accepted it
// is in the connection's deflate field.
func dialWS(ctx context.Context, t target, token string, local net.IP, readBuf int, timeout time.Duration, seed uint64, compress bool) (*wsConn, error) {
	var status int
	var body string
	d := ws.Dialer{
		ReadBufferSize:  readBuf,
		WriteBufferSize: 1024,
		Timeout:         timeout,
		NetDial:         loopbackDialer(local, timeout),
		OnStatusError: func(st int, reason []byte, resp io.Reader) {
			status = st
			// The connection stays open (keep-alive): read exactly the
			// response, never to EOF.
			if r, err := http.ReadResponse(bufio.NewReader(resp), nil); err == nil {
				b, _ := io.ReadAll(io.LimitReader(r.Body, 256))
				r.Body.Close()
				body = strings.TrimSpace(string(b))
			}
		},
	}
	if token != "" {
		d.Header = ws.HandshakeHeaderString("Authorization: Bearer " + token + "\r\n")
	}
	if compress {
		d.Extensions = []httphead.Option{deflateParams.Option()}
	}
	nc, br, hs, err := d.Dial(ctx, t.wsURL)
	if err != nil {
		return nil, &dialError{status: status, body: body, err: err}
	}
	c := newWSConn(nc, br, readBuf, seed)
	if compress {
		if c.deflate, err = deflateAccepted(hs.Extensions); err != nil {
			_ = nc.Close()
			return nil, err
		}
	}
	return c, nil
}

// deflateAccepted reports whether the handshake response accepted
// permessage-deflate, and fails when it did so with parameters the reader
// cannot honour.
func deflateAccepted(exts []httphead.Option) (bool, error) {
	for _, opt := range exts {
		if string(opt.Name) != wsflate.ExtensionName {
			continue
		}
		var p wsflate.Parameters
		if err := p.Parse(opt); err != nil {
			return false, err
		}
		if !p.ServerNoContextTakeover {
			return false, errContextTakeover
		}
		return true, nil
	}
	return false, nil
}

// readFrame returns the next frame. The payload is valid until the next call.
// Fragmented messages are not expected from herald (one message, one frame)
// and are reported as an error.
// Compressed frames (RSV1, permessage-deflate) are returned inflated.
func (c *wsConn) readFrame() (ws.OpCode, []byte, error) {
	if c.pending > 0 {
		if _, err := c.br.Discard(c.pending); err != nil {
			return 0, nil, err
		}
		c.pending = 0
	}
	if c.inf != nil {
		inflaters.Put(c.inf)
		c.inf = nil
	}
	h, err := ws.ReadHeaderBuffer(c.br, c.hdr)
	if err != nil {
		return 0, nil, err
	}
	if h.Masked {
		return 0, nil, errors.New("protocol error: masked frame from server")
	}
	if !h.Fin || h.OpCode == ws.OpContinuation {
		return 0, nil, errors.New("fragmented frame from server (not supported by the bench reader)")
	}
	if h.Length > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds %d", h.Length, maxFrame)
	}
	rsv1, rsv2, rsv3 := ws.RsvBits(h.Rsv)
	switch {
	case rsv2 || rsv3:
		return 0, nil, errors.New("protocol error: RSV2/RSV3 set by server")
	case rsv1 && !c.deflate:
		return 0, nil, errors.New("protocol error: compressed (RSV1) frame without negotiated permessage-deflate")
	case rsv1 && h.OpCode.IsControl():
		return 0, nil, wsflate.ErrUnexpectedCompressionBit
	}
	n := int(h.Length)
	c.lastWire, c.lastCompressed = ws.HeaderSize(h)+n, rsv1
	var p []byte
	if n <= c.br.Size() {
		if p, err = c.br.Peek(n); err != nil {
			return 0, nil, err
		}
		c.pending = n
	} else {
		if cap(c.scratch) < n {
			c.scratch = make([]byte, n)
		}
		p = c.scratch[:n]
		if _, err := io.ReadFull(c.br, p); err != nil {
			return 0, nil, err
		}
	}
	if !rsv1 {
		return h.OpCode, p, nil
	}
	c.inf = inflaters.Get().(*inflater)
	if p, err = c.inf.inflate(p, maxFrame); err != nil {
		return 0, nil, fmt.Errorf("inflate: %w", err)
	}
	return h.OpCode, p, nil
}

// nextMask returns a fresh masking key (xorshift64*; masks need not be
// cryptographically random for a load generator).
func (c *wsConn) nextMask() [4]byte {
	c.rng ^= c.rng >> 12
	c.rng ^= c.rng << 25
	c.rng ^= c.rng >> 27
	v := c.rng * 2685821657736338717
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], uint32(v>>32))
	return m
}

// writeFrame writes one masked client frame. Safe for concurrent use.
func (c *wsConn) writeFrame(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.wbuf[:0]
	b = append(b, 0x80|byte(op))
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	mask := c.nextMask()
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, payload...)
	ws.Cipher(b[start:], mask, 0)
	c.wbuf = b
	_, err := c.nc.Write(b)
	return err
}

func (c *wsConn) writeText(payload []byte) error { return c.writeFrame(ws.OpText, payload) }

// close sends a close frame (best effort, bounded) and closes the socket.
func (c *wsConn) close(code ws.StatusCode) {
	_ = c.nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	_ = c.writeFrame(ws.OpClose, ws.NewCloseFrameBody(code, ""))
	_ = c.nc.Close()
}

// closeCode extracts the status code of a close frame's payload.
func closeCode(p []byte) int {
	if len(p) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(p))
}

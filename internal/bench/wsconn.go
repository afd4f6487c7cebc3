package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
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
	path     string // of wsURL: the upgrade request's target
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
	t := target{hostPort: hp, wsURL: "ws://" + hp + path, path: path, apiBase: "http://" + hp}
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
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		return dialLoopback(ctx, addr, local, timeout)
	}
}

// dialLoopback opens a TCP connection to addr, which must be a loopback
// address, from local (nil: any). TCP keep-alive is off: it would cost four
// setsockopt calls per connection and means nothing on loopback (the server
// pings its clients).
func dialLoopback(ctx context.Context, addr string, local net.IP, timeout time.Duration) (net.Conn, error) {
	hp, err := loopbackHostPort(addr)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	return d.DialContext(ctx, "tcp", hp)
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

	sse     bool      // an event stream: readFrame returns each event's data
	sio     bool      // a Socket.IO subscriber: readFrame is readPacket
	line    []byte    // an event stream's line longer than br's buffer
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
// is in the connection's deflate field. A refused upgrade is a *dialError
// with the HTTP status and the start of the body.
//
// The handshake is lean, as the generator shares the machine with the server
// it measures: a plain TCP dial (see dialLoopback), the upgrade request
// written as one buffer, and the response read through the connection's own
// bufio.Reader, so whatever follows the response (often the connected frame,
// in the same segment) stays buffered for readFrame.
func dialWS(ctx context.Context, t target, token string, local net.IP, readBuf int, timeout time.Duration, seed uint64, compress bool) (*wsConn, error) {
	deadline := time.Now().Add(timeout)
	nc, err := dialLoopback(ctx, t.hostPort, local, timeout)
	if err != nil {
		return nil, &dialError{err: err}
	}
	_ = nc.SetDeadline(deadline)
	// Cancelling ctx interrupts the handshake.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	c := newWSConn(nc, bufio.NewReaderSize(nc, readBuf), readBuf, seed)
	err = c.handshake(t, token, compress)
	if !stop() && err == nil {
		err = ctx.Err() // ended as the handshake did: the deadline may be past
	}
	if err != nil {
		_ = nc.Close()
		if de := (*dialError)(nil); ctx.Err() != nil && (!errors.As(err, &de) || de.status == 0) {
			err = &dialError{err: ctx.Err()} // not the i/o timeout it caused
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

// websocketGUID is appended to the key to compute Sec-WebSocket-Accept
// (RFC 6455 §1.3).
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// deflateOffer is the Sec-WebSocket-Extensions value --compress sends.
var deflateOffer = func() string {
	var b bytes.Buffer
	_, _ = httphead.WriteOptions(&b, []httphead.Option{deflateParams.Option()})
	return b.String()
}()

// appendUpgradeRequest appends the HTTP upgrade request for t's path.
func appendUpgradeRequest(b []byte, t target, key []byte, token string, compress bool) []byte {
	b = append(b, "GET "...)
	b = append(b, t.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, t.hostPort...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	b = append(b, key...)
	b = append(b, "\r\n"...)
	if compress {
		b = append(b, "Sec-WebSocket-Extensions: "...)
		b = append(b, deflateOffer...)
		b = append(b, "\r\n"...)
	}
	if token != "" {
		b = append(b, "Authorization: Bearer "...)
		b = append(b, token...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// wsKey returns a fresh Sec-WebSocket-Key from the connection's generator:
// the key only has to be unpredictable enough to prove the server read it.
func wsKey(rng *uint64) [24]byte {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], nextRand(rng))
	binary.LittleEndian.PutUint64(raw[8:], nextRand(rng))
	var key [24]byte
	base64.StdEncoding.Encode(key[:], raw[:])
	return key
}

// acceptKey returns Sec-WebSocket-Accept for key.
func acceptKey(key []byte) [28]byte {
	var in [24 + len(websocketGUID)]byte
	copy(in[copy(in[:], key):], websocketGUID)
	sum := sha1.Sum(in[:])
	var out [28]byte
	base64.StdEncoding.Encode(out[:], sum[:])
	return out
}

// handshake writes the upgrade request and reads the response through c.br.
func (c *wsConn) handshake(t target, token string, compress bool) error {
	key := wsKey(&c.rng)

	req := appendUpgradeRequest(make([]byte, 0, 256+len(token)), t, key[:], token, compress)
	if _, err := c.nc.Write(req); err != nil {
		return &dialError{err: err}
	}

	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return &dialError{err: fmt.Errorf("reading the upgrade response: %w", err)}
	}
	status, ok := parseStatusLine(line)
	if !ok {
		return &dialError{err: fmt.Errorf("malformed upgrade response status line %.60q", line)}
	}
	if status != http.StatusSwitchingProtocols {
		return &dialError{status: status, body: responseBody(line, c.br), err: fmt.Errorf("unexpected HTTP status %d", status)}
	}
	u := upgradeCheck{want: acceptKey(key[:]), compress: compress}
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return &dialError{err: fmt.Errorf("reading the upgrade response: %w", err)}
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if err := u.header(line); err != nil {
			return err
		}
	}
	c.deflate = u.deflate
	return u.result()
}

// upgradeCheck checks the header lines of a 101 response (after the status
// line), one at a time; result reports what is missing at the end.
type upgradeCheck struct {
	want                          [28]byte // Sec-WebSocket-Accept for the key sent
	compress                      bool     // permessage-deflate was offered
	upgrade, connection, accepted bool
	deflate                       bool // permessage-deflate accepted
}

// header checks one header line, without its CRLF.
func (u *upgradeCheck) header(line []byte) error {
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return &dialError{err: fmt.Errorf("malformed upgrade response header %.60q", line)}
	}
	value = bytes.Trim(value, " \t")
	switch {
	case asciiEqualFold(name, "Upgrade"):
		u.upgrade = asciiEqualFold(value, "websocket")
	case asciiEqualFold(name, "Connection"):
		u.connection = hasTokenFold(value, "upgrade")
	case asciiEqualFold(name, "Sec-WebSocket-Accept"):
		u.accepted = string(value) == string(u.want[:])
	case asciiEqualFold(name, "Sec-WebSocket-Extensions"):
		if !u.compress {
			return &dialError{err: fmt.Errorf("server selected extensions that were not offered: %.60q", value)}
		}
		opts, ok := httphead.ParseOptions(value, nil)
		if !ok {
			return &dialError{err: fmt.Errorf("malformed Sec-WebSocket-Extensions %.60q", value)}
		}
		on, err := deflateAccepted(opts)
		if err != nil {
			return err
		}
		u.deflate = u.deflate || on
	}
	return nil
}

// result is the verdict once every header line has been checked.
func (u *upgradeCheck) result() error {
	switch {
	case !u.upgrade:
		return &dialError{err: errors.New("upgrade response without Upgrade: websocket")}
	case !u.connection:
		return &dialError{err: errors.New("upgrade response without Connection: Upgrade")}
	case !u.accepted:
		return &dialError{err: errBadAccept}
	}
	return nil
}

// errBadAccept fails a handshake whose Sec-WebSocket-Accept does not match
// the key sent.
var errBadAccept = errors.New("upgrade response with a wrong or missing Sec-WebSocket-Accept")

// parseStatusLine returns the status code of an HTTP/1.x status line.
func parseStatusLine(line []byte) (int, bool) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false
	}
	code := 0
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return 0, false
		}
		code = code*10 + int(d-'0')
	}
	if len(line) > 12 && line[12] != ' ' && line[12] != '\r' && line[12] != '\n' {
		return 0, false
	}
	return code, true
}

// responseBody returns the start of the body of a refused upgrade. The
// connection stays open (keep-alive): it reads exactly the response, never
// to EOF.
func responseBody(statusLine []byte, br *bufio.Reader) string {
	head := bytes.NewReader(bytes.Clone(statusLine))
	r, err := http.ReadResponse(bufio.NewReader(io.MultiReader(head, br)), nil)
	if err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 256))
	r.Body.Close()
	return strings.TrimSpace(string(b))
}

// asciiEqualFold reports whether b equals s, ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hasTokenFold reports whether the comma-separated list v holds token,
// ignoring ASCII case.
func hasTokenFold(v []byte, token string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if asciiEqualFold(bytes.Trim(t, " \t"), token) {
			return true
		}
	}
	return false
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

// Errors of frames the bench readers refuse (readFrame and the epoll path).
var (
	errMaskedFrame   = errors.New("protocol error: masked frame from server")
	errFragmented    = errors.New("fragmented frame from server (not supported by the bench reader)")
	errRSV23         = errors.New("protocol error: RSV2/RSV3 set by server")
	errRSV1NoDeflate = errors.New("protocol error: compressed (RSV1) frame without negotiated permessage-deflate")
	errFrameTooLarge = fmt.Errorf("frame exceeds %d bytes", maxFrame)
)

// readFrame returns the next frame. The payload is valid until the next call.
// Fragmented messages are not expected from herald (one message, one frame)
// and are reported as an error.
// Compressed frames (RSV1, permessage-deflate) are returned inflated.
func (c *wsConn) readFrame() (ws.OpCode, []byte, error) {
	switch {
	case c.sse:
		return c.readEvent()
	case c.sio:
		return c.readPacket()
	}
	return c.readWSFrame()
}

// readWSFrame is readFrame for a WebSocket.
func (c *wsConn) readWSFrame() (ws.OpCode, []byte, error) {
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
	rsv1, err := c.checkHeader(h)
	if err != nil {
		return 0, nil, err
	}
	n := int(h.Length)
	c.lastWire, c.lastCompressed = ws.HeaderSize(h)+n, rsv1
	p, err := c.payload(n)
	if err != nil || !rsv1 {
		return h.OpCode, p, err
	}
	c.inf = inflaters.Get().(*inflater)
	if p, err = c.inf.inflate(p, maxFrame); err != nil {
		return 0, nil, fmt.Errorf("inflate: %w", err)
	}
	return h.OpCode, p, nil
}

// checkHeader refuses a frame herald does not send, and reports whether it
// is compressed.
func (c *wsConn) checkHeader(h ws.Header) (rsv1 bool, err error) {
	rsv1, rsv2, rsv3 := ws.RsvBits(h.Rsv)
	switch {
	case h.Masked:
		return false, errMaskedFrame
	case !h.Fin || h.OpCode == ws.OpContinuation:
		return false, errFragmented
	case h.Length > maxFrame:
		return false, errFrameTooLarge
	case rsv2 || rsv3:
		return false, errRSV23
	case rsv1 && !c.deflate:
		return false, errRSV1NoDeflate
	case rsv1 && h.OpCode.IsControl():
		return false, wsflate.ErrUnexpectedCompressionBit
	}
	return rsv1, nil
}

// payload returns the next n bytes: in the read buffer when they fit (left
// there until the next frame), else read into scratch.
func (c *wsConn) payload(n int) ([]byte, error) {
	if n <= c.br.Size() {
		p, err := c.br.Peek(n)
		if err != nil {
			return nil, err
		}
		c.pending = n
		return p, nil
	}
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	p := c.scratch[:n]
	if _, err := io.ReadFull(c.br, p); err != nil {
		return nil, err
	}
	return p, nil
}

// nextRand steps an xorshift64* generator (masks and handshake keys need
// not be cryptographically random for a load generator).
func nextRand(s *uint64) uint64 {
	*s ^= *s >> 12
	*s ^= *s << 25
	*s ^= *s >> 27
	return *s * 2685821657736338717
}

func (c *wsConn) next64() uint64 { return nextRand(&c.rng) }

// appendMaskedFrame appends one client frame, masked with the high half of
// r.
func appendMaskedFrame(b []byte, op ws.OpCode, payload []byte, r uint64) []byte {
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
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], uint32(r>>32))
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, payload...)
	ws.Cipher(b[start:], mask, 0)
	return b
}

// writeFrame writes one masked client frame. Safe for concurrent use.
func (c *wsConn) writeFrame(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendMaskedFrame(c.wbuf[:0], op, payload, c.next64())
	_, err := c.nc.Write(c.wbuf)
	return err
}

// writeTexts writes text frames with one write. Safe for concurrent use.
func (c *wsConn) writeTexts(payloads ...[]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.wbuf[:0]
	for _, p := range payloads {
		b = appendMaskedFrame(b, ws.OpText, p, c.next64())
	}
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

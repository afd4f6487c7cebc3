package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/rawio"
	"github.com/herald-rt/herald/internal/stack"
	"github.com/herald-rt/herald/internal/transport"
	wst "github.com/herald-rt/herald/internal/transport/ws"
)

// The fast upgrade path. net/http costs a WebSocket connect more than the
// upgrade itself: a goroutine with its context, a parsed *http.Request with
// its header map, 8 KiB of bufio buffers that the hijack leaves as garbage.
// herald's own accept loop therefore reads the head of every new connection
// first: a well-formed WebSocket upgrade of the WebSocket path is upgraded
// right there (internal/transport/ws's RawUpgrader, gobwas/ws's zero-copy
// Upgrader, which parses and checks the request; the accept loop only finds
// where the head ends), and every other
// connection — API calls, metrics, health checks, anything unusual — goes to
// net/http with the bytes already read put back in front.

// headTimeout bounds reading a new connection's request head, like
// net/http's ReadHeaderTimeout.
const headTimeout = 10 * time.Second

// maxFastHead is the largest request head the fast path takes (a 16 KiB
// token fits); larger ones go to net/http.
const maxFastHead = 20 << 10

// headSize is the capacity of a pooled head buffer; a longer head gets a
// buffer of its own.
const headSize = 1024

// headPool holds buffers for reading request heads. Nothing keeps a head
// after its upgrade (the upgrader's callbacks copy what they keep), so a
// buffer goes back unless frames the client sent behind the head, or the
// whole connection, went on with it.
var headPool = sync.Pool{New: func() any { b := make([]byte, 0, headSize); return &b }}

// rawReaders holds the raw readers (internal/rawio) heads are read with.
var rawReaders = sync.Pool{New: func() any { return new(rawio.Reader) }}

// forkListener is the listener net/http serves: the connections the fast
// path left to it. Closing it (http.Server.Shutdown does) closes the real
// listener, which ends the accept loop.
type forkListener struct {
	ln   net.Listener
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newForkListener(ln net.Listener) *forkListener {
	return &forkListener{ln: ln, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *forkListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *forkListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
	})
	return err
}

func (l *forkListener) Addr() net.Addr { return l.ln.Addr() }

// hand gives c to net/http, or closes it when the listener is closed.
func (l *forkListener) hand(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// acceptLoop accepts connections until fl is closed. Accept errors other
// than closing (such as running out of file descriptors) are logged and
// retried with a growing pause, as net/http does.
func (s *Server) acceptLoop(fl *forkListener) error {
	var pause time.Duration
	for {
		c, err := fl.ln.Accept()
		if err != nil {
			select {
			case <-fl.done:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.metrics.AcceptErrors.Inc()
			s.log.Warn("accept failed; retrying", "err", err, "pause", pause.String())
			time.Sleep(pause)
			continue
		}
		pause = 0
		if tc, ok := c.(*net.TCPConn); ok {
			s.group.Go(func() { s.sniff(tc, fl) })
		} else {
			s.group.Go(func() { fl.hand(c) }) // not TCP: net/http serves it as it is
		}
	}
}

// sniff reads the head of a new connection and upgrades it on the fast path
// when it is a plain WebSocket upgrade of the WebSocket path; anything else
// goes to net/http.
func (s *Server) sniff(c *net.TCPConn, fl *forkListener) {
	pooled := headPool.Get().(*[]byte)
	_ = c.SetReadDeadline(time.Now().Add(s.headRead))
	s.sniffing.Store(c, nil)
	if s.sniffCut.Load() { // Serve is past cutSniffers: this one was missed
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
	buf, end, err := s.readHead(c, (*pooled)[:0])
	s.sniffing.Delete(c)
	_ = c.SetReadDeadline(time.Time{})
	switch {
	case err != nil:
		// Nothing sent, or a head unfinished within s.headRead (or cut
		// off): closed without an answer, as net/http does when reading a
		// request fails. Handing it on would give it net/http's own header
		// timeout again.
		_ = c.Close()
		return
	case end < 0:
		fl.hand(&replayConn{Conn: rawio.NewConn(c), head: buf}) // net/http answers what there is
		return
	}
	// The upgrade and the JWT check are a deep chain. Not before the head
	// is here: a connection that sends nothing keeps a small stack.
	stack.Grow()
	s.upgradeRaw(c, buf[:end], buf[end:])
	if len(buf) == end && cap(buf) == headSize {
		*pooled = buf[:0]
		headPool.Put(pooled)
	}
}

// cutSniffers ends the head reads still under way once the listener has
// closed: their connections get no answer, as a connection the listener
// never accepted would not, and the shutdown does not wait out their head
// timeout.
func (s *Server) cutSniffers() {
	s.sniffCut.Store(true)
	s.sniffing.Range(func(k, _ any) bool {
		_ = k.(*net.TCPConn).SetReadDeadline(time.Unix(1, 0))
		return true
	})
}

// readHead reads from c into buf until it holds the head of a WebSocket
// upgrade of the WebSocket path, and returns the bytes read and where the
// head ends; end is -1 when the bytes are something else, the head is too
// large, or reading failed (err).
func (s *Server) readHead(c net.Conn, buf []byte) (_ []byte, end int, err error) {
	var rd io.Reader = c
	if rc := rawio.RawConn(c); rc != nil {
		r := rawReaders.Get().(*rawio.Reader)
		r.Reset(rc)
		defer func() { r.Reset(nil); rawReaders.Put(r) }()
		rd = r
	}
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxFastHead {
				return buf, -1, nil
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			return buf, -1, err
		}
		line := bytes.IndexByte(buf, '\n')
		if line < 0 {
			continue
		}
		if (!s.isWSRequestLine(buf[:line]) && s.rawAcceptor(buf[:line]) == nil) || hasBareLF(buf) {
			// A line ended by LF alone is read as net/http reads it
			// (RFC 9112 §2.2 lets it): handed on at once, so that both
			// paths give it one meaning, and none waits for a CRLF CRLF
			// that will not come.
			return buf, -1, nil
		}
		end := bytes.Index(buf, []byte("\r\n\r\n"))
		if end < 0 {
			continue
		}
		end += 4
		if !hasUpgradeWebSocket(buf[:end]) {
			return buf, -1, nil
		}
		return buf, end, nil
	}
}

// rawAcceptor returns the transport that takes the upgrade whose request
// line is line (transport.RawAcceptor), or nil.
func (s *Server) rawAcceptor(line []byte) transport.RawAcceptor {
	if len(s.rawAcceptors) == 0 {
		return nil
	}
	target, ok := bytes.CutPrefix(line, []byte("GET "))
	i := bytes.IndexByte(target, ' ')
	if !ok || i < 0 {
		return nil
	}
	for _, a := range s.rawAcceptors {
		if a.TakesRaw(target[:i]) {
			return a
		}
	}
	return nil
}

// admitOrigin admits what a RawAcceptor takes: not while draining, only
// from an allowed origin.
func (s *Server) admitOrigin(origin, host, _ string, _ func() url.Values, _ any) (auth.Identity, *refusal) {
	if s.draining.Load() {
		return auth.Identity{}, &refusal{Status: http.StatusServiceUnavailable, Code: "shutting_down", Message: "server is shutting down"}
	}
	if !transport.OriginAllowed(s.cfg.AllowedOrigins, origin, host) {
		return auth.Identity{}, &refusal{Status: http.StatusForbidden, Code: "origin_not_allowed", Message: "origin not allowed"}
	}
	return auth.Identity{}, nil
}

// acceptRaw upgrades c for a, which takes it from there.
func (s *Server) acceptRaw(a transport.RawAcceptor, c net.Conn, head, rest []byte) {
	r, ref, err := s.originUpgrader.Upgrade(c, head)
	if err != nil {
		if ref != nil {
			writeRefusal(c, ref)
		}
		_ = c.Close()
		return
	}
	var pending *bufio.Reader
	if len(rest) > 0 {
		pending = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(rest), c), wst.ReadBufferSize)
	}
	authz, origin, host := r.Header()
	a.AcceptRaw(transport.RawUpgraded{NC: c, Response: r.Response, Pending: pending, RawQuery: r.RawQuery,
		Authorization: authz, Origin: origin, Host: host})
	s.originUpgrader.Release(r)
}

// isWSRequestLine reports whether line is "GET <ws-path>[?query] HTTP/…"
// (or the same for --conformance-echo-path).
func (s *Server) isWSRequestLine(line []byte) bool {
	return isRequestLine(line, s.cfg.WSPath) || s.isEchoRequestLine(line)
}

func (s *Server) isEchoRequestLine(line []byte) bool {
	return s.cfg.ConformanceEchoPath != "" && isRequestLine(line, s.cfg.ConformanceEchoPath)
}

func isRequestLine(line []byte, path string) bool {
	rest, ok := bytes.CutPrefix(line, []byte("GET "))
	if !ok {
		return false
	}
	rest, ok = bytes.CutPrefix(rest, []byte(path))
	return ok && len(rest) > 0 && (rest[0] == ' ' || rest[0] == '?')
}

// hasBareLF reports whether b has a LF not preceded by CR.
func hasBareLF(b []byte) bool {
	for i := bytes.IndexByte(b, '\n'); i >= 0; {
		if i == 0 || b[i-1] != '\r' {
			return true
		}
		j := bytes.IndexByte(b[i+1:], '\n')
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

// singleHeaders are the header fields an upgrade may carry once: given
// twice, net/http and the fast path would each pick one (the first, the
// last), so the request is refused on both (a second Host net/http refuses
// itself).
var singleHeaders = []string{"Host", "Origin", "Upgrade", "Sec-Websocket-Key"}

// errBadHead refuses a malformed upgrade head (400).
var errBadHead = errors.New("malformed request head")

// checkHead refuses, on the fast path, what net/http refuses in a request
// head or the net/http path refuses in checkHeader: a header line that is
// not "name: value", a control character in a value, or a field of
// singleHeaders given twice. head ends with CRLF CRLF and has no bare LF.
func checkHead(head []byte) error {
	var seen [4]bool
	_, rest, _ := bytes.Cut(head, []byte("\r\n")) // the request line: checked already
	for len(rest) > 2 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return fmt.Errorf("%w: header line %q", errBadHead, line)
		}
		for _, c := range value {
			if (c < 0x20 && c != '\t') || c == 0x7f {
				return fmt.Errorf("%w: control character in %s", errBadHead, name)
			}
		}
		for i, h := range singleHeaders {
			if bytes.EqualFold(name, []byte(h)) {
				if seen[i] {
					return fmt.Errorf("%w: %s given twice", errBadHead, h)
				}
				seen[i] = true
			}
		}
	}
	return nil
}

// checkHeader is checkHead for a request net/http parsed: a field of
// singleHeaders given twice is refused.
func checkHeader(h http.Header) error {
	for _, name := range singleHeaders[1:] { // net/http refuses a second Host
		if len(h[name]) > 1 {
			return fmt.Errorf("%w: %s given twice", errBadHead, name)
		}
	}
	return nil
}

// hasUpgradeWebSocket reports whether head has an "Upgrade: websocket"
// header field (names and the value compared without case).
func hasUpgradeWebSocket(head []byte) bool {
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte("\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Upgrade")) {
			return bytes.EqualFold(bytes.TrimSpace(value), []byte("websocket"))
		}
	}
	return false
}

// upgradeRaw upgrades c, whose request head is head; rest is what the client
// sent behind it (frames, read with the head).
func (s *Server) upgradeRaw(c net.Conn, head, rest []byte) {
	if err := checkHead(head); err != nil {
		writeRefusal(c, &refusal{Status: http.StatusBadRequest, Code: string(protocol.CodeBadRequest), Message: err.Error()})
		_ = c.Close()
		return
	}
	if a := s.rawAcceptor(head[:bytes.IndexByte(head, '\n')]); a != nil {
		s.acceptRaw(a, c, head, rest)
		return
	}
	r, ref, err := s.rawUpgrader.Upgrade(c, head)
	if err != nil {
		if ref != nil {
			writeRefusal(c, ref)
		} else {
			s.log.Debug("upgrade failed", "err", err, "remote", c.RemoteAddr())
		}
		_ = c.Close()
		return
	}
	var pending *bufio.Reader
	if len(rest) > 0 {
		pending = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(rest), c), wst.ReadBufferSize)
	}
	// The response is written before startSession returns (Greet); only
	// then can its buffer go back.
	s.startSession(c, r.Identity, r.Deflate, r.Response, pending, subscribeParam(r.RawQuery), s.isEchoRequestLine(head))
	s.rawUpgrader.Release(r)
}

// writeRefusal answers a refused upgrade with the same JSON error as the
// rest of the API, and closes the connection after it.
func writeRefusal(c net.Conn, ref *refusal) {
	var body bytes.Buffer
	_ = json.NewEncoder(&body).Encode(errorBody(ref.Code, ref.Message))
	resp := &http.Response{
		StatusCode: ref.Status,
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header: http.Header{
			"Content-Type":   {"application/json"},
			"Cache-Control":  {"no-store"},
			"Connection":     {"close"},
			"Content-Length": {strconv.Itoa(body.Len())},
		},
		ContentLength: int64(body.Len()),
		Body:          io.NopCloser(&body),
		Close:         true,
	}
	_ = c.SetWriteDeadline(time.Now().Add(wst.HandshakeWriteTimeout))
	_ = resp.Write(c)
}

// replayConn is a connection handed to net/http with the bytes the sniffer
// already read put back in front. Embedding the connection keeps what
// net/http and a later hijack look for (CloseWrite, SyscallConn). Its reads
// and writes are raw system calls (internal/rawio), which do not wake the
// runtime's sysmon (docs/performance.md).
type replayConn struct {
	*rawio.Conn
	head []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		if c.head = c.head[n:]; len(c.head) == 0 {
			c.head = nil // a hijacked connection keeps no head buffer
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo copies through Read: the embedded connection's WriteTo (which
// io.Copy prefers) would skip the head.
func (c *replayConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

package socketio

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-rt/herald/internal/gogroup"
	"github.com/herald-rt/herald/internal/netpoll"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport"
	"github.com/herald-rt/herald/internal/transport/socketio/engine"
	"github.com/herald-rt/herald/internal/transport/socketio/wire"
	wst "github.com/herald-rt/herald/internal/transport/ws"
)

// Direct sockets.
//
// A socket that connects over WebSocket from the start (socket.io-client
// with transports: ['websocket'], or any client that asks for
// transport=websocket without a sid) needs no Engine.IO session: nothing
// is ever polled, and nothing can be upgraded. Its handshake is answered
// here, its requests are read on the request's goroutine until its CONNECT
// makes its herald session, and from then on it is a WebSocket like /ws:
// its hub client writes the socket itself (publications encoded once per
// message on the socketio wire, each socket's frame header and recovery
// offset around them in the same writev; pings and closes are Engine.IO
// packets: directTransport), and the poller reads it (internal/transport/ws's
// reader, each text message an Engine.IO packet: onText). An idle socket
// holds no goroutine and no buffer.

// WebSocketOptions configure direct sockets (Options.WebSocket).
type WebSocketOptions struct {
	// Poller reads connected sockets.
	Poller *netpoll.Poller
	// Group counts the goroutine that reads a socket until its CONNECT
	// (Server.Close ends it).
	Group *gogroup.Group
	// Frames, when set, are the wires of whole frames shared by sockets
	// whose per-socket bytes are alike (see FrameWires); nil: every socket
	// frames the shared bytes itself.
	Frames *FrameWires
}

// preConnectBuffer is the read buffer of a socket until its CONNECT.
const preConnectBuffer = 1024

// isDirect reports whether r opens a socket over WebSocket from the
// start, from an allowed origin: everything else, refusals included, is
// the Engine.IO server's.
func (s *Server) isDirect(r *http.Request) bool {
	if r.Method != http.MethodGet || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return false
	}
	q := r.URL.Query()
	if q.Get("EIO") != "4" || q.Get("transport") != "websocket" || q.Get("sid") != "" {
		return false
	}
	return r.Header.Get("Origin") == "" || s.eo.CheckOrigin == nil || s.eo.CheckOrigin(r)
}

// serveDirect upgrades r, sends the open packet and reads the socket until
// its CONNECT to "/" is accepted, then leaves it to the poller. (The
// server's accept loop upgrades most such requests itself: AcceptRaw.)
func (s *Server) serveDirect(w http.ResponseWriter, r *http.Request) {
	l := &wsLink{srv: s, sid: randomID()}
	if !s.addPending(l) {
		s.report(engine.KindSessionsFull, errors.New("session table full"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, serverFull)
		return
	}
	defer s.removePending(l)
	u, err := wst.UpgradeHTTP(w, r, false)
	if err != nil {
		return
	}
	_ = u.NC.SetDeadline(time.Time{})
	s.runDirect(l, u.NC, u.Response, u.Pending, handshakeOf(r))
}

// serverFull is the Engine.IO error body of a refused handshake.
const serverFull = `{"code":3,"message":"Server full"}`

// TakesRaw reports whether target (a GET's path and query) opens a socket
// over WebSocket from the start on this server's path.
func (s *Server) TakesRaw(path string, target []byte) bool {
	p, q, ok := bytes.Cut(target, []byte("?"))
	if !ok || (string(p) != path && string(p) != strings.TrimSuffix(path, "/")) {
		return false
	}
	if bytes.ContainsAny(q, "%+;") { // escapes, or what ParseQuery refuses
		v, err := url.ParseQuery(string(q))
		return err == nil && v.Get("EIO") == "4" && v.Get("transport") == "websocket" && !v.Has("sid")
	}
	var eio, tr []byte
	var seenEIO, seenTr bool
	for len(q) > 0 {
		var kv []byte
		kv, q, _ = bytes.Cut(q, []byte("&"))
		k, v, _ := bytes.Cut(kv, []byte("="))
		switch string(k) {
		case "sid":
			return false
		case "EIO":
			if !seenEIO {
				eio, seenEIO = v, true
			}
		case "transport":
			if !seenTr {
				tr, seenTr = v, true
			}
		}
	}
	return string(eio) == "4" && string(tr) == "websocket"
}

// AcceptRaw runs a socket the server's accept loop upgraded (TakesRaw):
// what serveDirect does after its upgrade.
func (s *Server) AcceptRaw(up transport.RawUpgraded) {
	l := &wsLink{srv: s, sid: randomID()}
	if !s.addPending(l) {
		s.report(engine.KindSessionsFull, errors.New("session table full"))
		_ = up.NC.SetWriteDeadline(time.Now().Add(wst.HandshakeWriteTimeout))
		_, _ = io.WriteString(up.NC, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "+strconv.Itoa(len(serverFull))+"\r\n\r\n"+serverFull)
		_ = up.NC.Close()
		return
	}
	defer s.removePending(l)
	h := &handshake{rawQuery: up.RawQuery, authz: up.Authorization, origin: up.Origin, host: up.Host, remote: up.NC.RemoteAddr().String()}
	s.runDirect(l, up.NC, up.Response, up.Pending, h)
}

// runDirect greets an upgraded socket (its held response and the open
// packet), reads it until its CONNECT, and leaves it to the poller.
func (s *Server) runDirect(l *wsLink, nc net.Conn, response []byte, pending *bufio.Reader, h *handshake) {
	g := s.o.WebSocket.Group
	g.Enter()
	defer g.Leave()
	l.c = s.newConn(h)
	l.c.direct = l
	if !l.attach(nc) {
		return
	}
	pr := preConnectReaders.Get().(*preConnect)
	defer pr.release()
	pr.out = s.appendGreeting(pr.out[:0], response, l.sid)
	if !l.write(pr.out) {
		l.closeNow()
		return
	}
	br := pending
	if br == nil {
		br = pr.br
		br.Reset(nc)
	}
	if !l.readUntilConnect(br, pr) {
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	var rest *bufio.Reader
	if br.Buffered() > 0 {
		rest = br
		if br == pr.br {
			pr.br = nil // the socket's now
		}
	}
	l.wc.Watch(s.o.WebSocket.Poller, rest)
}

// appendGreeting appends what a direct socket is sent first, in one
// write: the held 101 response and the open packet, as a frame.
func (s *Server) appendGreeting(dst, response []byte, sid string) []byte {
	var ob [160]byte
	open := wire.AppendOpen(ob[:0], sid, nil, s.eo.PingInterval.Milliseconds(), s.eo.PingTimeout.Milliseconds(), s.eo.MaxPayload)
	var hdr [wst.Headroom]byte
	dst = append(dst, response...)
	dst = append(dst, wst.TextHeader(&hdr, len(open))...)
	return append(dst, open...)
}

// preConnect is what a socket reads with until its CONNECT: a read buffer
// (unless the upgrade left one), a frame reader, and a message buffer;
// and the buffer its greeting is written from.
type preConnect struct {
	br  *bufio.Reader
	rd  wsutil.Reader
	msg bytes.Buffer
	out []byte
}

// maxPooledMessage bounds the message buffer a preConnect keeps.
const maxPooledMessage = 4 << 10

// release returns pr to the pool.
func (pr *preConnect) release() {
	if pr.br == nil {
		pr.br = bufio.NewReaderSize(nil, preConnectBuffer)
	}
	pr.br.Reset(nil)
	pr.rd = wsutil.Reader{}
	if pr.msg.Cap() > maxPooledMessage {
		pr.msg = bytes.Buffer{}
	}
	pr.msg.Reset()
	if cap(pr.out) > maxPooledMessage {
		pr.out = nil
	}
	preConnectReaders.Put(pr)
}

// preConnectReaders are the read buffers of sockets before their CONNECT.
var preConnectReaders = sync.Pool{New: func() any {
	return &preConnect{br: bufio.NewReaderSize(nil, preConnectBuffer)}
}}

func (s *Server) addPending(l *wsLink) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || (s.eo.MaxSessions > 0 && len(s.pending) >= s.eo.MaxSessions) {
		return false
	}
	s.pending[l] = struct{}{}
	return true
}

func (s *Server) removePending(l *wsLink) {
	s.mu.Lock()
	delete(s.pending, l)
	s.mu.Unlock()
}

// wsLink is a direct socket's connection: written here until its CONNECT,
// by its hub client afterwards.
type wsLink struct {
	srv *Server
	sid string
	c   *Conn
	// wc reads the socket once its CONNECT made the herald session; set
	// and read by the socket's reading goroutine only.
	wc *wst.Conn

	mu     sync.Mutex
	nc     net.Conn
	closed bool
}

// attach sets the link's connection; false when the link was closed
// meanwhile (the connection is closed then).
func (l *wsLink) attach(nc net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nc = nc
	if l.closed {
		_ = nc.Close()
		return false
	}
	return true
}

// readUntilConnect reads the socket's messages until a CONNECT to "/" is
// accepted (true), or the socket ends or sends no such CONNECT within the
// connect timeout (false, the socket closed).
func (l *wsLink) readUntilConnect(br *bufio.Reader, pr *preConnect) bool {
	s := l.srv
	_ = l.nc.SetReadDeadline(time.Now().Add(s.o.ConnectTimeout))
	rd := &pr.rd
	*rd = wsutil.Reader{Source: br, State: ws.StateServerSide, CheckUTF8: true, MaxMessageSize: int64(s.eo.MaxPayload)}
	ctl := wsutil.ControlFrameHandler(l, ws.StateServerSide)
	rd.OnIntermediate = ctl
	for l.wc == nil {
		hdr, err := rd.NextFrame()
		if err == nil && hdr.OpCode.IsControl() {
			if err = ctl(hdr, rd); err == nil {
				continue
			}
		}
		pr.msg.Reset()
		if err == nil {
			_, err = pr.msg.ReadFrom(rd)
		}
		if err != nil {
			l.readFailed(err)
			return false
		}
		data := pr.msg.Bytes()
		if hdr.OpCode == ws.OpBinary {
			l.onBinary(data)
		} else {
			l.onText(data)
		}
		if l.isClosed() {
			return false
		}
	}
	return true
}

// readFailed ends a socket whose reading failed before its CONNECT.
func (l *wsLink) readFailed(err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		l.srv.report(KindConnectTimeout, errors.New("no CONNECT packet in time"))
		l.close("connect timeout")
	case errors.Is(err, wsutil.ErrMessageTooLarge), errors.Is(err, wsutil.ErrFrameTooLarge):
		l.srv.report(engine.KindTooLarge, err)
		l.refuse(wst.CloseFrame(protocol.CloseMessageTooBig, "message over maxPayload"))
	case errors.As(err, new(wsutil.ClosedError)), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		l.closeNow()
	default:
		l.srv.report(engine.KindBadPacket, err)
		l.refuse(wst.CloseFrame(protocol.CloseProtocolError, ""))
	}
}

// refusedGrace bounds how long a socket refused before its CONNECT is read
// on after its close (see refuse): the hub's close grace, which bounds it
// for a connected socket.
const refusedGrace = 2 * time.Second

// refuse ends a socket before its CONNECT as every refusal ends a
// connection (internal/transport/ws: refuse, discard): frames (its close
// frame last) are written, then what the peer still sends is read and
// dropped until the peer ends its side, a read fails or refusedGrace has
// passed, and only then is the socket closed. Closed with bytes unread, it
// would be reset, and a reset destroys what the peer had not read yet: a
// peer still sending would miss the close frame. Called by the reading
// goroutine only (Server.Close ends the wait by closing the socket).
func (l *wsLink) refuse(frames ...[]byte) {
	if l.write(frames...) {
		_ = l.nc.SetReadDeadline(time.Now().Add(refusedGrace))
		_, _ = io.Copy(io.Discard, l.nc)
	}
	l.closeNow()
}

// onText takes one Engine.IO packet (a text message; data is valid during
// the call only), before and after the CONNECT.
func (l *wsLink) onText(data []byte) {
	p, err := wire.ParseEPacket(data)
	if err != nil {
		l.srv.report(engine.KindBadPacket, err)
		l.close("parse error")
		return
	}
	switch p.Type {
	case wire.EMessage:
		l.c.OnMessage(bytes.Clone(p.Data), false)
	case wire.EPing: // v4 clients only ping to probe; answered anyway
		l.c.send(append([]byte{byte(wire.EPong)}, p.Data...))
	case wire.EClose:
		l.close("client close")
	case wire.EPong, wire.ENoop, wire.EUpgrade:
		// A pong has touched the client already (ws.Conn does for every
		// message).
	default: // an open packet from a client
		l.srv.report(engine.KindBadPacket, errors.New("open packet from client"))
		l.close("parse error")
	}
}

// onBinary takes one binary message (a Socket.IO binary attachment).
func (l *wsLink) onBinary(data []byte) { l.c.OnMessage(bytes.Clone(data), true) }

// Write writes p whole to the socket before its CONNECT (wsutil's answers
// to control frames).
func (l *wsLink) Write(p []byte) (int, error) {
	if !l.write(p) {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

// write writes bufs to the socket before its CONNECT, bounded in time.
func (l *wsLink) write(bufs ...[]byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.nc == nil {
		return false
	}
	// One write, not a writev: writev leaves the descriptor an iovec
	// array for life.
	var b []byte
	if len(bufs) == 1 {
		b = bufs[0]
	} else {
		b = bytes.Join(bufs, nil)
	}
	_ = l.nc.SetWriteDeadline(time.Now().Add(wst.HandshakeWriteTimeout))
	_, err := l.nc.Write(b)
	_ = l.nc.SetWriteDeadline(time.Time{})
	return err == nil
}

// send writes one packet before the socket's hub client exists.
func (l *wsLink) send(pkt []byte) { l.write(wst.TextFrame(pkt)) }

// close ends the socket: through its hub client once there is one (an
// Engine.IO close packet and a close frame, directTransport), else here
// with the same. Before the CONNECT it is called by the reading goroutine
// only, the socket's one writer then.
func (l *wsLink) close(reason string) {
	if hc := l.c.hc.Load(); hc != nil {
		hc.Close(protocol.CloseNormal, reason)
		return
	}
	l.refuse(wst.TextFrame([]byte{byte(wire.EClose)}), wst.CloseFrame(protocol.CloseNormal, ""))
}

// closeNow drops the socket before its CONNECT.
func (l *wsLink) closeNow() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.nc != nil {
		_ = l.nc.Close()
	}
}

func (l *wsLink) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// gone is a direct socket's end, its hub client gone (OnGone): what
// OnClose is for a socket on an Engine.IO session.
func (c *Conn) gone() {
	c.mu.Lock()
	c.closed = true
	c.hc.Store(nil)
	c.endAcksLocked()
	c.runner = nil
	c.mu.Unlock()
}

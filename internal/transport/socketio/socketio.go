// Package socketio serves Socket.IO v5 clients (socket.io-client 4.x) on
// herald: a Socket.IO socket is a herald session whose commands arrive as
// Socket.IO events and whose replies leave as acks, on the Engine.IO
// sessions of package engine.
//
// The socket is a translator only: rooms are herald channels, and every
// built-in event becomes the native command /ws clients send (subscribe,
// unsubscribe, message, history), run by herald's own session (a Runner),
// with its permissions, limits and recovery; the native replies come back
// through WriteNative and are turned into acks. See docs/socketio.md for the
// mapping.
package socketio

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/transport/socketio/engine"
	"github.com/herald-rt/herald/internal/transport/socketio/wire"
	"github.com/herald-rt/herald/internal/transport/ws"
)

// Runner is herald's session behind one connected socket. Run runs one
// native command (a JSON object exactly as a /ws client sends it); its
// replies, and the publications of the channels it subscribed, come back
// through the Conn's WriteNative. Close ends the session; Run is not called
// after it. Run and Close are called by one goroutine at a time.
type Runner interface {
	Run(cmd []byte)
	Close()
}

// Refusal is a refused CONNECT, answered with a CONNECT_ERROR packet
// {"message":Message,"data":{"code":Code}}.
type Refusal struct{ Code, Message string }

func (r *Refusal) Error() string { return r.Message }

// Credentials are what a CONNECT presents: its auth payload's token (or
// else the handshake's bearer header or token query parameter), and the
// handshake's query with the auth payload's string fields laid over it
// (userId, role and org, for --insecure-query-auth).
type Credentials struct {
	Token string
	// Query returns that query, parsed on its first call (most
	// authentication never needs it).
	Query func() url.Values
}

// Options configure a Server.
type Options struct {
	// Connect authenticates a CONNECT to "/" and starts herald's session
	// for c; a *Refusal error is sent to the client as is, any other as
	// "internal error". Unused in conformance mode.
	Connect func(c *Conn, cred Credentials) (Runner, error)
	// ConnectTimeout closes an Engine.IO session that has not connected to
	// a namespace in this time (default 45s).
	ConnectTimeout time.Duration
	// Recovery turns on connection state recovery: a pid in the CONNECT
	// answer and a recovery offset as every delivery's last argument.
	Recovery bool
	// Conformance answers as the protocol test suites' reference server:
	// no authentication, namespaces "/" and "/custom", "auth" emitted on
	// connection, "message" echoed as "message-back", "message-with-ack"
	// acked, binary attachments carried. Never for production.
	Conformance bool
	// OnError is told of every refused or malformed Socket.IO packet, with
	// a short kind (a metric label).
	OnError func(kind string, err error)
	// BrokerLive reports whether herald's broker serves requests (nil:
	// always). A recovery refused as unavailable while it did not, at the
	// CONNECT or at the refusal, is retried: see closeForRetry.
	BrokerLive func() bool
	// OnRecoveryRetry is told of each such retry.
	OnRecoveryRetry func(room string)
	// WebSocket, when set, serves sockets that connect over WebSocket from
	// the start without an Engine.IO session: their herald session's hub
	// client writes the WebSocket itself and the poller reads it (see
	// direct.go). Connect must then make such sessions (Conn.Direct).
	WebSocket *WebSocketOptions
}

// Error kinds reported to Options.OnError (besides engine's).
const (
	KindBadPacket      = "sio_bad_packet"      // undecodable Socket.IO packet: the session is closed
	KindBadAck         = "sio_bad_ack"         // an ACK for an id never asked: closed
	KindBadNamespace   = "sio_bad_namespace"   // CONNECT to an unknown namespace: CONNECT_ERROR
	KindNotConnected   = "sio_not_connected"   // a packet for a namespace not connected: dropped
	KindBinary         = "sio_binary"          // binary attachments: refused with an error
	KindConnectTimeout = "sio_connect_timeout" // no CONNECT in time: closed
	KindRefused        = "sio_refused"         // CONNECT refused (authentication)
)

// Server serves Socket.IO on one path; it is an http.Handler.
type Server struct {
	o   Options
	eo  engine.Options
	eng *engine.Server

	mu      sync.Mutex
	closed  bool
	pending map[*wsLink]struct{} // direct sockets before their CONNECT
}

// NewServer returns a server whose Engine.IO layer takes eo (its Open is
// set here).
func NewServer(eo engine.Options, o Options) *Server {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 45 * time.Second
	}
	s := &Server{o: o, eo: eo, pending: map[*wsLink]struct{}{}}
	eo.Open = s.open
	s.eng = engine.New(eo)
	return s
}

// ServeHTTP serves Engine.IO requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.o.WebSocket != nil && s.isDirect(r) {
		s.serveDirect(w, r)
		return
	}
	s.eng.ServeHTTP(w, r)
}

// Close closes every session.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	pending := make([]*wsLink, 0, len(s.pending))
	for l := range s.pending {
		pending = append(pending, l)
	}
	s.mu.Unlock()
	for _, l := range pending { // the hub, shut down before, ends the others
		l.closeNow()
	}
	s.eng.Close()
}

// NumSessions reports the Engine.IO sessions open.
func (s *Server) NumSessions() int { return s.eng.NumSessions() }

// brokerDown reports whether the broker does not serve requests now.
func (s *Server) brokerDown() bool { return s.o.BrokerLive != nil && !s.o.BrokerLive() }

func (s *Server) recoveryRetried(room string) {
	if s.o.OnRecoveryRetry != nil {
		s.o.OnRecoveryRetry(room)
	}
}

func (s *Server) report(kind string, err error) {
	if s.o.OnError != nil {
		s.o.OnError(kind, err)
	}
}

func (s *Server) open(ess *engine.Session, r *http.Request) (engine.Handler, error) {
	c := s.newConn(handshakeOf(r))
	c.ess = ess
	c.timer = time.AfterFunc(s.o.ConnectTimeout, c.connectTimeout)
	return c, nil
}

// newConn is the Socket.IO side of a handshake h, its Engine.IO side (ess
// or direct) still to be set.
func (s *Server) newConn(h *handshake) *Conn { return &Conn{srv: s, hs: h} }

// handshake is what a socket's CONNECT needs of its handshake request:
// its query (parsed at each CONNECT), Authorization header, and origin,
// host and remote address for admission.
type handshake struct {
	rawQuery                    string
	authz, origin, host, remote string
}

// handshakeOf is what a socket's CONNECT needs of its handshake request r.
func handshakeOf(r *http.Request) *handshake {
	return &handshake{rawQuery: r.URL.RawQuery, authz: r.Header.Get("Authorization"), origin: r.Header.Get("Origin"), host: r.Host, remote: r.RemoteAddr}
}

// connectFields are the string fields of a CONNECT payload laid over the
// handshake's query.
var connectFields = [...]string{"userId", "role", "org", "token"}

// credentials reads what a CONNECT with payload data (a JSON object, or
// nil) presents, with the handshake's query and Authorization header; and
// the recovery pid and offset it names ("" when none).
func (h *handshake) credentials(data []byte) (cred Credentials, pid, offset string) {
	var q url.Values
	query := func() url.Values {
		if q == nil {
			q, _ = url.ParseQuery(h.rawQuery) // a fresh map: the payload's fields are laid over it
		}
		return q
	}
	cred.Query = query
	token := false
	if data != nil {
		pid, offset, token = connectPayload(data, query())
	}
	if token {
		cred.Token = q.Get("token")
	} else {
		cred.Token = auth.TokenFrom(h.authz, query)
	}
	return cred, pid, offset
}

// connectPayload lays a CONNECT payload's string fields over q, and
// returns its recovery pid and offset, and whether it names a token.
func connectPayload(data []byte, q url.Values) (pid, offset string, token bool) {
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(data, &fields) // ParseSPacket checked it is an object
	for _, k := range connectFields {
		raw, ok := fields[k]
		if !ok {
			continue
		}
		var str string
		if json.Unmarshal(raw, &str) != nil {
			var num json.Number
			if json.Unmarshal(raw, &num) != nil {
				continue
			}
			str = num.String()
		}
		q.Set(k, str)
	}
	_ = json.Unmarshal(fields["pid"], &pid)
	_ = json.Unmarshal(fields["offset"], &offset)
	_, token = fields["token"]
	return pid, offset, token
}

// randomID returns 96 random bits, base64url.
func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Conn is one Engine.IO session's Socket.IO side. OnMessage and OnClose
// are called by the engine; WriteNative by herald's session, from any
// goroutine.
type Conn struct {
	srv *Server
	// ess is the Engine.IO session, or direct the WebSocket of a socket
	// that connected over WebSocket from the start (its hub client writes
	// the socket itself); exactly one is set.
	ess    *engine.Session
	direct *wsLink
	// moved is the WebSocket an Engine.IO session's socket moved onto at
	// its upgrade (OnUpgrade), from then on a direct socket's; takeWS does
	// the move, set by Options.Connect for such a socket.
	moved  atomic.Pointer[wsLink]
	takeWS func(nc net.Conn, pending *bufio.Reader) bool
	// hs is the handshake, for CONNECT; nil once a direct socket (which
	// connects once: its DISCONNECT ends it) has connected.
	hs    *handshake
	timer *time.Timer
	// hc is the herald session's hub client once "/" is connected: from
	// then on everything the socket is sent goes through its queue.
	hc atomic.Pointer[hub.Client]

	// Read side, touched by OnMessage only (the engine serializes it): a
	// binary packet waiting for its attachments, nil when none is.
	att *attachments

	mu     sync.Mutex
	closed bool
	// burst and collect route send while a session's answer is handled:
	// queued exempt from the bound (a history answer), or collected as the
	// first bytes of a subscribe's burst.
	burst   bool
	collect *[]byte
	// sid is the socket id of "/" ("" while not connected); nsps the ids
	// of the other namespaces connected (conformance mode only).
	sid      string
	nsps     map[string]string
	runner   Runner // herald's session, while "/" is connected
	pid      string // recovery session id ("" when recovery is off)
	nextID   uint64
	calls    callTable
	hold     int      // recovery subscribes not yet answered
	held     [][]byte // native frames held until the CONNECT answer is out
	lost     bool     // a recovery subscribe did not recover everything
	joined   bool     // a recovery subscribe was answered: the room is joined
	down     bool     // the broker was not live at the CONNECT
	retry    bool     // a recovery to ask again: nothing more is sent, the connection ends
	retryCh  string   // its room, until taken to end the connection (takeRetryLocked)
	connSent bool     // the CONNECT answer of "/" is out

	// Server emits awaiting the client's ACK (EmitWithAck), by ack id;
	// ackNext is the last id sent.
	acks    map[uint64]pendingAck
	ackNext uint64

	// posMu guards the socket's rooms and event filter, which the hub's
	// writer reads (Wrap, under the hub client's lock); never held while
	// calling the hub.
	posMu  sync.Mutex
	rooms  roomSet // channel → last position sent
	filter eventFilter
	slab   []byte   // a direct socket's per-delivery bytes are carved from it (frameLocked)
	last   lastRoom // the room of the last delivery (roomLocked); zero after the rooms change
}

// ID is the Engine.IO session id.
func (c *Conn) ID() string {
	if c.direct != nil {
		return c.direct.sid
	}
	return c.ess.ID()
}

// socketID is the socket id of "/" ("" before its CONNECT).
func (c *Conn) socketID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sid
}

// Transport names the Engine.IO transport in use.
func (c *Conn) Transport() string {
	if c.direct != nil {
		return "websocket"
	}
	return c.ess.Transport()
}

// Close ends the Engine.IO session (and with it the socket).
func (c *Conn) Close(reason string) {
	if c.direct != nil {
		c.direct.close(reason)
		return
	}
	if l := c.moved.Load(); l != nil {
		l.close(reason)
		return
	}
	c.ess.Close(reason)
}

// stopTimer stops the CONNECT timeout (a direct socket's is its read
// deadline instead).
func (c *Conn) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
	}
}

func (c *Conn) connectTimeout() {
	c.mu.Lock()
	connected := c.sid != "" || len(c.nsps) > 0
	c.mu.Unlock()
	if !connected {
		c.srv.report(KindConnectTimeout, errors.New("no CONNECT packet in time"))
		c.Close("connect timeout")
	}
}

// OnClose ends herald's session.
func (c *Conn) OnClose(string) {
	c.stopTimer()
	c.mu.Lock()
	c.closed = true
	c.hc.Store(nil)
	c.endAcksLocked()
	r := c.runner
	c.runner = nil
	c.mu.Unlock()
	if r != nil {
		r.Close()
	}
}

// OnMessage decodes one Socket.IO packet (or binary attachment) and runs
// it.
func (c *Conn) OnMessage(data []byte, binary bool) {
	if binary {
		a := c.att
		if a == nil {
			c.protocolError(KindBadPacket, errors.New("binary message without a binary packet"))
			return
		}
		a.parts = append(a.parts, data)
		if len(a.parts) < a.pkt.Attachments {
			return
		}
		c.att = nil
		c.dispatch(a.pkt, a.parts)
		return
	}
	if c.att != nil {
		c.protocolError(KindBadPacket, errors.New("text packet while attachments were due"))
		return
	}
	p, err := wire.ParseSPacket(data)
	if err != nil {
		c.protocolError(KindBadPacket, err)
		return
	}
	if p.Attachments > 0 {
		c.att = &attachments{pkt: p}
		return
	}
	c.dispatch(p, nil)
}

// attachments is a binary packet waiting for its attachments.
type attachments struct {
	pkt   wire.SPacket // its Attachments are due
	parts [][]byte     // those received
}

// protocolError closes the session for a malformed packet.
func (c *Conn) protocolError(kind string, err error) {
	c.srv.report(kind, err)
	c.Close("parse error")
}

func (c *Conn) dispatch(p wire.SPacket, atts [][]byte) {
	switch p.Type {
	case wire.SConnect:
		c.connect(p)
		return
	case wire.SConnectError:
		c.protocolError(KindBadPacket, errors.New("CONNECT_ERROR from a client"))
		return
	}
	c.mu.Lock()
	ok := c.sid != "" && p.Nsp == "/"
	if !ok {
		_, ok = c.nsps[p.Nsp]
	}
	c.mu.Unlock()
	if !ok {
		c.srv.report(KindNotConnected, errors.New("packet for a namespace not connected"))
		return
	}
	switch p.Type {
	case wire.SDisconnect:
		c.disconnect(p.Nsp)
	case wire.SAck, wire.SBinaryAck:
		c.ack(p, p.Type == wire.SBinaryAck)
	case wire.SEvent, wire.SBinaryEvent:
		if c.srv.o.Conformance {
			c.conformanceEvent(p, atts)
			return
		}
		if p.Type == wire.SBinaryEvent {
			c.srv.report(KindBinary, errors.New("binary attachments are not supported"))
			c.refuse(p.ID, "", "binary_unsupported", "binary attachments are not supported; send JSON")
			return
		}
		c.event(p)
	}
}

// send queues one packet, whole, to the client: through the herald
// session's hub client once there is one (so it keeps its place among the
// publications), else on the Engine.IO session.
func (c *Conn) send(pkt []byte) {
	hc := c.hc.Load()
	switch {
	case hc == nil && c.direct != nil:
		c.direct.send(pkt)
	case hc == nil:
		_ = c.ess.Send(pkt, nil)
	case c.collect != nil:
		*c.collect = c.appendFrame(*c.collect, pkt)
	case c.burst:
		hc.SendBurst(c.frame(pkt), nil)
	default:
		hc.Send(c.frame(pkt))
	}
}

// frame makes one packet what the socket's hub client writes: a WebSocket
// frame, for a direct socket's WebSocket or an Engine.IO session's pipe.
func (c *Conn) frame(pkt []byte) []byte { return ws.TextFrame(pkt) }

// appendFrame appends frame(pkt) to dst.
func (c *Conn) appendFrame(dst, pkt []byte) []byte {
	var hdr [ws.Headroom]byte
	dst = append(dst, ws.TextHeader(&hdr, len(pkt))...)
	return append(dst, pkt...)
}

// sendPacket queues a Socket.IO packet in an Engine.IO message.
func (c *Conn) sendPacket(p wire.SPacket) {
	c.send(wire.AppendSPacket([]byte{byte(wire.EMessage)}, p))
}

// connect answers a CONNECT: "/" only (and "/custom" in conformance).
func (c *Conn) connect(p wire.SPacket) {
	if c.srv.o.Conformance {
		c.conformanceConnect(p)
		return
	}
	if p.Nsp != "/" {
		c.srv.report(KindBadNamespace, errors.New("CONNECT to namespace "+p.Nsp))
		c.connectError(p.Nsp, "", "Invalid namespace")
		return
	}
	c.mu.Lock()
	again := c.sid != ""
	spent := c.hs == nil // a direct socket's DISCONNECT ended it
	c.mu.Unlock()
	if again || spent {
		c.srv.report(KindBadPacket, errors.New("second CONNECT to /"))
		return
	}
	cred, pid, offset := c.hs.credentials(p.Data)
	r, err := c.srv.o.Connect(c, cred)
	if errors.Is(err, errAnswered) {
		c.srv.report(KindRefused, err)
		return
	}
	if err != nil {
		c.srv.report(KindRefused, err)
		ref := (*Refusal)(nil)
		if !errors.As(err, &ref) {
			ref = &Refusal{Code: "internal", Message: "internal error"}
		}
		c.connectError("/", ref.Code, ref.Message)
		return
	}
	c.stopTimer()
	sid := randomID()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		r.Close()
		return
	}
	c.sid = sid
	c.runner = r
	if c.direct != nil {
		// A direct socket connects once (its DISCONNECT ends it): what
		// only a CONNECT needs is let go.
		c.hs = nil
	}
	var restore map[string]position
	if c.srv.o.Recovery {
		c.pid = randomID()
		if pid != "" && len(pid) <= 64 {
			if rooms, ok := parseRecovery(offset); ok {
				c.pid, restore = pid, rooms
			}
		}
	}
	events := c.filterNative()
	if len(restore) == 0 {
		c.connSent = true
		c.send(c.connectAnswer(sid))
		c.mu.Unlock()
		return
	}
	// Recovery: every room is subscribed again from its position; the
	// CONNECT answer waits for all their answers (it says whether all
	// recovered: the same pid, or a new one), and whatever herald sends
	// meanwhile waits behind it.
	c.hold, c.down = len(restore), c.srv.brokerDown()
	cmds := make([][]byte, 0, len(restore))
	for ch, pos := range restore {
		id := c.newCall(&call{kind: callRecover, ack: -1, channel: ch, since: &pos.offset})
		cmds = append(cmds, subscribeCmd(id, ch, events, &sinceArg{Offset: &pos.offset, Epoch: pos.epoch}))
	}
	c.mu.Unlock()
	for _, cmd := range cmds {
		r.Run(cmd)
		c.mu.Lock()
		retry := c.retry
		c.mu.Unlock()
		if retry {
			return // the connection is ending: the client asks again
		}
	}
}

// connectError answers a CONNECT with CONNECT_ERROR.
func (c *Conn) connectError(nsp, code, msg string) {
	b := wire.AppendSPacketHead([]byte{byte(wire.EMessage)}, wire.SConnectError, 0, nsp, -1)
	b = append(b, `{"message":`...)
	b = wire.AppendJSONString(b, msg)
	if code != "" {
		b = append(b, `,"data":{"code":`...)
		b = wire.AppendJSONString(b, code)
		b = append(b, '}')
	}
	c.send(append(b, '}'))
}

// disconnect ends a namespace's socket; the Engine.IO session stays.
func (c *Conn) disconnect(nsp string) {
	c.mu.Lock()
	delete(c.nsps, nsp)
	var r Runner
	if nsp == "/" {
		c.sid = ""
		r, c.runner = c.runner, nil
		c.calls = callTable{}
		c.endAcksLocked()
		c.posMu.Lock()
		c.rooms = roomSet{}
		c.last = lastRoom{}
		c.filter = eventFilter{}
		c.posMu.Unlock()
		c.hold, c.held, c.lost, c.joined, c.down, c.connSent = 0, nil, false, false, false, false
	}
	c.mu.Unlock()
	if r != nil {
		r.Close()
	}
}

// Package engine is the server side of Engine.IO v4: the handshake, HTTP
// long-polling, WebSocket, the upgrade from polling to WebSocket, and the
// heartbeat. It knows nothing of Socket.IO or of herald: a Handler given at
// each handshake receives the session's messages, and writes through the
// session.
//
// A session lives on the node that opened it; its table is bounded
// (Options.MaxSessions) and every entry expires with its heartbeat, so a
// polling client that stops polling is forgotten within PingInterval +
// PingTimeout. Bad input gets a defined answer — an HTTP status with the
// Engine.IO JSON error, or the session closed — and is reported to
// Options.OnError.
package engine

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-rt/herald/internal/transport/socketio/wire"
)

// Handler receives one session's events. Its methods are never called
// concurrently for one session, and never after OnClose.
type Handler interface {
	// OnMessage is called with each message packet's data (a copy the
	// handler may keep); binary is set for a binary message.
	OnMessage(data []byte, binary bool)
	// OnClose is called once, when the session ends, with the reason.
	OnClose(reason string)
}

// Options configure a Server. Zero durations and sizes take the defaults
// noted.
type Options struct {
	// PingInterval is how often the server pings a session (default 25s);
	// PingTimeout how long it then waits for the pong before closing it
	// (default 20s). Both are announced in the open packet.
	PingInterval, PingTimeout time.Duration
	// MaxPayload bounds a polling request's body and a WebSocket message
	// (default 1e6 bytes); it is announced in the open packet.
	MaxPayload int
	// MaxSessions bounds the sessions open at once; past it a handshake
	// gets 503 (0: no bound).
	MaxSessions int
	// QueueBytes bounds what a session may have queued and not yet written
	// (default 1 MiB); past it the session is closed as a slow consumer.
	QueueBytes int
	// CheckOrigin decides whether a browser Origin may connect (nil: any).
	// An allowed Origin is echoed in the CORS headers of polling answers.
	CheckOrigin func(r *http.Request) bool
	// Open is called at each handshake, before the open packet is sent; it
	// returns the session's handler, or an error to refuse the handshake
	// (answered 403 with the error's text as the message).
	Open func(s *Session, r *http.Request) (Handler, error)
	// OnError, when set, is told of every bad request and every session
	// closed for bad input, with a short kind (a metric label) and detail.
	OnError func(kind string, err error)
	// Go starts every goroutine a session needs (its WebSocket reader and
	// writer, its handler's close), so that their owner can wait for them;
	// nil: the go statement. Each ends once its session is closed.
	Go func(f func())
}

// Error kinds passed to Options.OnError.
const (
	KindBadRequest     = "bad_request"       // unknown transport, protocol version, method
	KindUnknownSID     = "unknown_sid"       // no such session (or it ended)
	KindBadPacket      = "bad_packet"        // a packet or payload that does not decode
	KindDuplicatePoll  = "duplicate_poll"    // a second GET while one is pending
	KindOverlapPost    = "overlap_post"      // a second POST while one is read
	KindTooLarge       = "payload_too_large" // past MaxPayload
	KindPingTimeout    = "ping_timeout"      // no pong in time
	KindSlowConsumer   = "slow_consumer"     // past QueueBytes
	KindSessionsFull   = "sessions_full"     // past MaxSessions
	KindOrigin         = "origin"            // Origin refused
	KindUpgradeRefused = "upgrade_refused"   // a WebSocket for a session that cannot upgrade
)

// Engine.IO HTTP error codes (the protocol's JSON error bodies).
const (
	codeTransportUnknown    = 0
	codeUnknownSID          = 1
	codeBadHandshakeMethod  = 2
	codeBadRequest          = 3
	codeForbidden           = 4
	codeUnsupportedProtocol = 5
)

// Server serves Engine.IO on one path. Create it with New; it is safe for
// concurrent use.
type Server struct {
	o        Options
	mu       sync.Mutex
	sessions map[string]*Session
	closed   bool
}

// New returns a server with o's defaults filled in.
func New(o Options) *Server {
	if o.PingInterval <= 0 {
		o.PingInterval = 25 * time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 20 * time.Second
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = 1e6
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 1 << 20
	}
	if o.Go == nil {
		o.Go = func(f func()) { go f() }
	}
	return &Server{o: o, sessions: make(map[string]*Session)}
}

// NumSessions reports the sessions open.
func (s *Server) NumSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close closes every session (reason "server shutting down") and refuses
// new ones.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	all := make([]*Session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	for _, ss := range all {
		ss.close("server shutting down", true)
	}
}

func (s *Server) report(kind string, err error) {
	if s.o.OnError != nil {
		s.o.OnError(kind, err)
	}
}

// ServeHTTP answers one Engine.IO request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.cors(w, r) {
		return
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	q := r.URL.Query()
	if q.Get("EIO") != "4" {
		s.fail(w, KindBadRequest, codeUnsupportedProtocol, "Unsupported protocol version")
		return
	}
	transport := q.Get("transport")
	if transport != "polling" && transport != "websocket" {
		s.fail(w, KindBadRequest, codeTransportUnknown, "Transport unknown")
		return
	}
	sid := q.Get("sid")
	if transport == "websocket" {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Method != http.MethodGet {
			s.fail(w, KindBadRequest, codeBadRequest, "Bad request")
			return
		}
		if sid == "" {
			s.handshake(w, r, true)
			return
		}
		s.upgrade(w, r, sid)
		return
	}
	if sid == "" {
		if r.Method != http.MethodGet {
			s.fail(w, KindBadRequest, codeBadHandshakeMethod, "Bad handshake method")
			return
		}
		s.handshake(w, r, false)
		return
	}
	ss := s.lookup(sid)
	if ss == nil {
		s.fail(w, KindUnknownSID, codeUnknownSID, "Session ID unknown")
		return
	}
	switch r.Method {
	case http.MethodGet:
		ss.poll(w, r)
	case http.MethodPost:
		ss.post(w, r)
	default:
		s.fail(w, KindBadRequest, codeBadRequest, "Bad request")
	}
}

// cors sets the CORS headers of an allowed Origin, or answers 403 and
// reports false for a refused one.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if s.o.CheckOrigin != nil && !s.o.CheckOrigin(r) {
		s.fail(w, KindOrigin, codeForbidden, "Forbidden")
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			h.Set("Access-Control-Allow-Headers", req)
		}
		h.Set("Access-Control-Max-Age", "86400")
	}
	return true
}

func (s *Server) fail(w http.ResponseWriter, kind string, code int, msg string) {
	s.report(kind, errors.New(msg))
	status := http.StatusBadRequest
	switch code {
	case codeForbidden:
		status = http.StatusForbidden
	}
	writeError(w, status, code, msg)
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `{"code":`+strconv.Itoa(code)+`,"message":`+strconv.Quote(msg)+`}`)
}

func (s *Server) lookup(sid string) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[sid]
}

// newSID returns 144 random bits, base64url: a sid is the only credential
// of a polling request, so it must not be guessable.
func newSID() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// handshake opens a session: polling answers the open packet as this GET's
// body; WebSocket upgrades and sends it as the first frame.
func (s *Server) handshake(w http.ResponseWriter, r *http.Request, websocket bool) {
	ss := &Session{srv: s, sid: newSID()}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, codeBadRequest, "Server shutting down")
		return
	case s.o.MaxSessions > 0 && len(s.sessions) >= s.o.MaxSessions:
		s.mu.Unlock()
		s.report(KindSessionsFull, errors.New("session table full"))
		writeError(w, http.StatusServiceUnavailable, codeBadRequest, "Server full")
		return
	}
	s.sessions[ss.sid] = ss // reserved; removed again if Open refuses
	s.mu.Unlock()
	h, err := s.o.Open(ss, r)
	if err != nil {
		s.forget(ss)
		writeError(w, http.StatusForbidden, codeForbidden, err.Error())
		return
	}
	ss.h = h
	upgrades := []string{"websocket"}
	if websocket {
		upgrades = []string{}
	}
	open := wire.AppendOpen(nil, ss.sid, upgrades, s.o.PingInterval.Milliseconds(), s.o.PingTimeout.Milliseconds(), s.o.MaxPayload)
	if !websocket {
		ss.mu.Lock()
		ss.startHeartbeat()
		ss.mu.Unlock()
		writePayload(w, [][]byte{open})
		return
	}
	c, err := acceptWS(w, r, s.o.MaxPayload)
	if err != nil {
		ss.Close("websocket upgrade failed")
		return
	}
	ss.mu.Lock()
	ss.ws = c
	ss.upgraded = true
	ss.queue = append([]out{{data: open}}, ss.queue...)
	ss.queued += len(open)
	ss.startHeartbeat()
	ss.kickLocked()
	ss.mu.Unlock()
	s.o.Go(func() { ss.readWS(c, false) })
}

// upgrade takes a WebSocket for an existing polling session: it runs the
// probe (2probe / 3probe) and switches on the client's upgrade packet.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, sid string) {
	ss := s.lookup(sid)
	if ss == nil {
		s.fail(w, KindUnknownSID, codeUnknownSID, "Session ID unknown")
		return
	}
	ss.mu.Lock()
	if ss.upgraded || ss.probe != nil || ss.closed {
		ss.mu.Unlock()
		// Like the reference server: the WebSocket is accepted, then
		// closed at once (a 400 would be an error event in the client).
		s.report(KindUpgradeRefused, errors.New("websocket for a session already upgraded or upgrading"))
		if c, err := acceptWS(w, r, s.o.MaxPayload); err == nil {
			c.closeWith(1008, "session already upgraded")
		}
		return
	}
	ss.probe = probing // reserved while the upgrade runs
	ss.mu.Unlock()
	c, err := acceptWS(w, r, s.o.MaxPayload)
	ss.mu.Lock()
	if err != nil || ss.closed {
		ss.probe = nil
		ss.mu.Unlock()
		if c != nil {
			c.closeNow()
		}
		return
	}
	ss.probe = c
	ss.mu.Unlock()
	s.o.Go(func() { ss.readWS(c, true) })
}

func (s *Server) forget(ss *Session) {
	s.mu.Lock()
	if s.sessions[ss.sid] == ss {
		delete(s.sessions, ss.sid)
	}
	s.mu.Unlock()
}

// writePayload answers a poll with packets joined by the separator.
func writePayload(w http.ResponseWriter, packets [][]byte) {
	n := len(packets)
	for _, p := range packets {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for i, p := range packets {
		if i > 0 {
			b = append(b, wire.Separator)
		}
		b = append(b, p...)
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

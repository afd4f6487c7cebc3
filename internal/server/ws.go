package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lxzan/gws"
	"golang.org/x/time/rate"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
)

// maxInsecureUserID bounds user ids taken from query parameters.
const maxInsecureUserID = 200

// handleWS authenticates the upgrade request, upgrades it and hands the
// connection to its read loop. The handler returns right after the upgrade
// so net/http's per-request state is freed.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "server is shutting down")
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeError(w, http.StatusBadRequest, "websocket_required", "this endpoint only accepts WebSocket upgrades")
		return
	}
	if !s.originAllowed(r) {
		s.metrics.AuthFailures.WithLabelValues("origin").Inc()
		s.log.Info("upgrade refused: origin not allowed", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		writeError(w, http.StatusForbidden, "origin_not_allowed", "origin not allowed")
		return
	}
	id, err := s.authenticate(r)
	if err != nil {
		reason := auth.Reason(err)
		s.metrics.AuthFailures.WithLabelValues(reason).Inc()
		s.log.Info("upgrade refused: unauthorized", "reason", reason, "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, string(protocol.CodeUnauthorized), "unauthorized: "+reason)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r)
	if err != nil {
		s.log.Debug("upgrade failed", "err", err, "remote", r.RemoteAddr)
		return
	}
	c := s.hub.NewClient(conn.NetConn(), hub.ClientOptions{
		ID:        newClientID(),
		UserID:    id.UserID,
		OrgID:     id.OrgID,
		ExpiresAt: id.ExpiresAt,
		// gws negotiates permessage-deflate on exactly this condition.
		Deflate: s.cfg.Compression && strings.Contains(r.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate"),
	})
	sess := &session{srv: s, c: c, id: id}
	if s.cfg.RateLimit > 0 {
		sess.limiter = rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst)
	}
	conn.Session().Store(sessionKey, sess)
	if err := s.hub.Register(c); err != nil {
		c.Close(protocol.CloseGoingAway, "server shutting down")
	} else {
		c.Send(hub.Seal(protocol.AppendConnected(hub.NewFrameBuffer(160), &protocol.Connected{
			ClientID:     c.ID,
			UserID:       id.UserID,
			Role:         id.Role,
			OrgID:        id.OrgID,
			Time:         time.Now(),
			PingInterval: s.cfg.PingInterval,
		})))
		s.log.Debug("client connected", "client", c.ID, "user", id.UserID, "org", id.OrgID)
	}
	go conn.ReadLoop()
}

// authenticate establishes the connection's identity from a verified token
// or, only with --insecure-query-auth, from query parameters.
func (s *Server) authenticate(r *http.Request) (auth.Identity, error) {
	token := auth.TokenFromRequest(r)
	if token == "" {
		if s.cfg.InsecureQueryAuth {
			return insecureIdentity(r.URL.Query())
		}
		return auth.Identity{}, auth.ErrMissingToken
	}
	if s.verifier == nil {
		return auth.Identity{}, auth.ErrAlgorithm
	}
	return s.verifier.Verify(token)
}

func insecureIdentity(q url.Values) (auth.Identity, error) {
	id := auth.Identity{UserID: q.Get("userId"), Role: q.Get("role"), OrgID: q.Get("org")}
	if id.UserID == "" {
		return id, auth.ErrMissingToken
	}
	if len(id.UserID) > maxInsecureUserID || !utf8.ValidString(id.UserID) || !utf8.ValidString(id.Role) || !utf8.ValidString(id.OrgID) {
		return auth.Identity{}, auth.ErrClaims
	}
	return id, nil
}

// originAllowed applies --allowed-origins. Requests without Origin (non-browser
// clients) pass: identity comes from the token, not from the origin.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

func newClientID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

const sessionKey = "s"

// sessionSlot is a one-value gws.SessionStorage holding the connection's
// session; gws's default allocates a map per connection.
type sessionSlot struct{ s *session }

func (p *sessionSlot) Len() int {
	if p.s == nil {
		return 0
	}
	return 1
}
func (p *sessionSlot) Load(string) (any, bool) { return p.s, p.s != nil }
func (p *sessionSlot) Delete(string)           { p.s = nil }
func (p *sessionSlot) Store(_ string, v any)   { p.s, _ = v.(*session) }
func (p *sessionSlot) Range(f func(string, any) bool) {
	if p.s != nil {
		f(sessionKey, p.s)
	}
}

// wsHandler receives gws events for every connection and forwards them to the
// connection's session.
type wsHandler struct{ srv *Server }

func sessionOf(conn *gws.Conn) *session {
	v, _ := conn.Session().Load(sessionKey)
	s, _ := v.(*session)
	return s
}

func (h *wsHandler) OnOpen(*gws.Conn) {}

func (h *wsHandler) OnClose(conn *gws.Conn, err error) {
	s := sessionOf(conn)
	if s == nil {
		return
	}
	code := 0
	var ce *gws.CloseError
	var sc interface{ Uint16() uint16 } // gws's own close codes (1002, 1009, …)
	switch {
	case errors.As(err, &ce):
		code = int(ce.Code)
	case errors.As(err, &sc):
		code = int(sc.Uint16())
		s.srv.log.Info("connection closed by protocol violation", "client", s.c.ID, "user", s.id.UserID, "code", code, "err", err)
	}
	s.c.Gone(code)
	s.srv.log.Debug("client gone", "client", s.c.ID, "user", s.id.UserID, "code", code, "err", err)
}

func (h *wsHandler) OnPing(conn *gws.Conn, payload []byte) {
	if s := sessionOf(conn); s != nil {
		s.c.Touch()
		s.c.Pong(payload)
	}
}

func (h *wsHandler) OnPong(conn *gws.Conn, _ []byte) {
	if s := sessionOf(conn); s != nil {
		s.c.Touch()
	}
}

func (h *wsHandler) OnMessage(conn *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	s := sessionOf(conn)
	if s == nil {
		return
	}
	s.c.Touch()
	data := msg.Bytes()
	s.srv.metrics.MessagesIn.Inc()
	s.srv.metrics.BytesIn.Add(float64(len(data)))
	if msg.Opcode != gws.OpcodeText {
		s.sendError(protocol.CodeBinaryNotSupported, "binary frames are not supported; send JSON text frames", "", nil)
		return
	}
	if !utf8.Valid(data) {
		s.srv.log.Info("invalid UTF-8 in text frame, closing", "client", s.c.ID, "user", s.id.UserID)
		s.c.Close(protocol.CloseInvalidPayload, "invalid UTF-8")
		return
	}
	s.handle(data)
}

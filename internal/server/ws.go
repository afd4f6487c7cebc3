package server

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"golang.org/x/time/rate"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
)

// maxInsecureUserID bounds user ids taken from query parameters.
const maxInsecureUserID = 200

// handleWS authenticates the upgrade request, upgrades it and registers the
// connection with the poller. The handler returns right after the upgrade,
// so net/http's per-request state is freed, and no goroutine waits on an
// idle connection: one runs only while there is something to read.
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
	var ext *wsflate.Extension
	var up ws.HTTPUpgrader // writes only to hw's buffer: no timeout needed
	if s.cfg.Compression {
		// No context takeover either way: nothing to keep per connection, and
		// each publication can be compressed once for every subscriber.
		ext = &wsflate.Extension{Parameters: wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}}
		up.Negotiate = ext.Negotiate
	}
	hw := &holdResponse{ResponseWriter: w}
	nc, rw, _, err := up.Upgrade(r, hw)
	if err != nil {
		s.log.Debug("upgrade failed", "err", err, "remote", r.RemoteAddr)
		if nc != nil {
			hw.flushTo(nc) // the upgrader's error response
			_ = nc.Close()
		}
		return
	}
	deflate := false
	if ext != nil {
		_, deflate = ext.Accepted()
	}
	sess := &session{srv: s, id: id, nc: nc, deflate: deflate}
	var pending *bufio.Reader
	if rw != nil && rw.Reader.Buffered() > 0 {
		pending = rw.Reader // frames the client sent right behind the handshake
	}
	c := s.hub.NewClient(nc, hub.ClientOptions{
		ID:        newClientID(),
		UserID:    id.UserID,
		OrgID:     id.OrgID,
		ExpiresAt: id.ExpiresAt,
		Deflate:   deflate,
		OnGone:    sess.gone,
	})
	sess.c = c
	if s.cfg.RateLimit > 0 {
		sess.limiter = rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst)
	}
	// The 101 response and the connected frame leave in one system call,
	// before the client is registered, so nothing can be queued ahead of
	// connected.
	connected := hub.Seal(protocol.AppendConnected(hub.NewFrameBuffer(160), &protocol.Connected{
		ClientID:     c.ID,
		UserID:       id.UserID,
		Role:         id.Role,
		OrgID:        id.OrgID,
		Time:         time.Now(),
		PingInterval: s.cfg.PingInterval,
	}))
	if err := c.Greet(hw.buf, connected); err != nil {
		s.log.Debug("upgrade failed: writing the handshake response", "err", err, "remote", r.RemoteAddr)
		_ = nc.Close()
		return
	}
	if err := s.hub.Register(c); err != nil {
		c.Close(protocol.CloseGoingAway, "server shutting down")
		return
	}
	s.log.Debug("client connected", "client", c.ID, "user", id.UserID, "org", id.OrgID, "deflate", deflate)
	if pending != nil {
		go sess.watch(pending)
	} else {
		sess.watch(nil)
	}
}

// holdResponse is the ResponseWriter handed to the upgrader: its Hijack
// points the connection's buffered writer at buf, so the handshake response
// can go out together with the first frame instead of in a write of its own.
type holdResponse struct {
	http.ResponseWriter
	buf heldBytes
}

func (h *holdResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err == nil {
		rw.Writer.Reset(&h.buf)
	}
	return nc, rw, err
}

// heldBytes collects what the upgrader flushes after the hijack.
type heldBytes []byte

func (b *heldBytes) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}

// flushTo writes the held response to nc, bounded in time (error responses).
func (h *holdResponse) flushTo(nc net.Conn) {
	if len(h.buf) == 0 {
		return
	}
	_ = nc.SetWriteDeadline(time.Now().Add(handshakeWriteTimeout))
	_, _ = nc.Write(h.buf)
}

// handshakeWriteTimeout bounds writing the handshake response.
const handshakeWriteTimeout = 10 * time.Second

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

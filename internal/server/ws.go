package server

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport"
	wst "github.com/herald-rt/herald/internal/transport/ws"
)

// maxInsecureUserID bounds user ids taken from query parameters.
const maxInsecureUserID = 200

// handleWS upgrades WebSocket requests that reach net/http: the ones the
// fast path (upgradeRaw) leaves to it, such as an upgrade on a keep-alive
// connection that carried other requests first, or a plain GET of the
// WebSocket path, which gets a 400. The handler returns right after the
// upgrade, so net/http's per-request state is freed.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") && !s.draining.Load() {
		writeError(w, http.StatusBadRequest, "websocket_required", "this endpoint only accepts WebSocket upgrades")
		return
	}
	if err := checkHeader(r.Header); err != nil {
		writeError(w, http.StatusBadRequest, string(protocol.CodeBadRequest), err.Error())
		return
	}
	id, ref := s.admit(r.Header.Get("Origin"), r.Host, auth.TokenFromRequest(r), r.URL.Query, r.RemoteAddr)
	if ref != nil {
		writeError(w, ref.Status, ref.Code, ref.Message)
		return
	}
	u, err := wst.UpgradeHTTP(w, r, s.cfg.Compression)
	if err != nil {
		s.log.Debug("upgrade failed", "err", err, "remote", r.RemoteAddr)
		return
	}
	echo := s.cfg.ConformanceEchoPath != "" && r.URL.Path == s.cfg.ConformanceEchoPath
	s.startSession(u.NC, id, u.Deflate, u.Response, u.Pending, subscribeParam(r.URL.RawQuery), echo)
}

// subscribeParam returns the channels an upgrade request's query names in
// its subscribe parameter: subscribe=a,b, or subscribe repeated, in order.
func subscribeParam(rawQuery string) []string {
	if !strings.Contains(rawQuery, "subscribe=") {
		return nil
	}
	q, _ := url.ParseQuery(rawQuery)
	var out []string
	for _, v := range q["subscribe"] {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

// refusal is an upgrade request turned down before the upgrade.
type refusal = transport.Refusal

// admit decides an upgrade request: not while draining, only from an allowed
// origin, only with a valid identity. query is called only when needed;
// remote (the peer's address, a string or a net.Addr) is only logged, so a
// net.Addr is formatted only for a refusal.
func (s *Server) admit(origin, host, token string, query func() url.Values, remote any) (auth.Identity, *refusal) {
	if s.draining.Load() {
		return auth.Identity{}, &refusal{Status: http.StatusServiceUnavailable, Code: "shutting_down", Message: "server is shutting down"}
	}
	// A full server refuses before the token is checked: at the limit,
	// where reconnect storms happen, a refusal should cost little (an
	// RS256 or ES256 check does not). Register remains the exact check.
	if s.maxConns > 0 && s.hub.NumClients() >= s.maxConns {
		return auth.Identity{}, s.limitRefusal(hub.ErrServerFull, "", remote)
	}
	if !transport.OriginAllowed(s.cfg.AllowedOrigins, origin, host) {
		s.metrics.AuthFailures.WithLabelValues("origin").Inc()
		s.sparse.Note("refused: origin", 1, func(count int64) {
			s.log.Info("upgrade refused: origin not allowed", "refused", count, "origin", origin, "remote", remote)
		})
		return auth.Identity{}, &refusal{Status: http.StatusForbidden, Code: "origin_not_allowed", Message: "origin not allowed"}
	}
	id, err := s.authenticate(token, query)
	if err != nil {
		reason := auth.Reason(err)
		s.metrics.AuthFailures.WithLabelValues(reason).Inc()
		s.sparse.Note("refused: token "+reason, 1, func(count int64) {
			s.log.Info("upgrade refused: unauthorized", "reason", reason, "refused", count, "remote", remote)
		})
		return auth.Identity{}, &refusal{Status: http.StatusUnauthorized, Code: string(protocol.CodeUnauthorized), Message: "unauthorized: " + reason}
	}
	return id, nil
}

// limitRefusal is the answer to a connection a limit refused (in admit or
// in Greet), or nil when err is no such refusal. It counts the refusal and
// logs it: the first of a burst at once, then one line per 10 s with the
// number refused meanwhile.
func (s *Server) limitRefusal(err error, user string, remote any) *refusal {
	switch {
	case errors.Is(err, hub.ErrServerFull):
		s.metrics.ConnectionsRefused.WithLabelValues("server_full").Inc()
		s.sparse.Note("refused: server full", 1, func(count int64) {
			s.log.Warn("upgrade refused: the server holds --max-connections connections", "max_connections", s.maxConns, "refused", count, "remote", remote)
		})
		return &refusal{Status: http.StatusServiceUnavailable, Code: "server_full", Message: "server is at its connection limit; try again later"}
	case errors.Is(err, hub.ErrUserFull):
		s.metrics.ConnectionsRefused.WithLabelValues("user_limit").Inc()
		s.sparse.Note("refused: user full", 1, func(count int64) {
			s.log.Info("upgrade refused: the user holds --max-user-connections connections", "user", user, "max_user_connections", s.cfg.MaxUserConnections, "refused", count, "remote", remote)
		})
		return &refusal{Status: http.StatusTooManyRequests, Code: "user_connection_limit", Message: "too many connections for this user"}
	}
	return nil
}

// startSession runs an upgraded connection: the client is created, the held
// 101 response and the connected frame leave in one system call (before the
// client is registered, so nothing can be queued ahead of connected), and
// the socket is watched for readiness — after the bytes that came behind the
// handshake (pending), if any. No goroutine waits on an idle connection.
// subs are the channels named in the upgrade request's subscribe
// parameter: the connection is subscribed to them before its greeting is
// written, and their subscribed replies leave in the same write. An echo
// connection (--conformance-echo-path) gets no greeting, and echoes what it
// is sent.
func (s *Server) startSession(nc net.Conn, id auth.Identity, deflate bool, response []byte, pending *bufio.Reader, subs []string, echo bool) {
	wc := &wst.Conn{NC: nc, Opts: &s.wsConn, Deflate: deflate, Echo: echo}
	sess := s.newSession(id, nc, hub.ClientOptions{
		Transport: s.wsTransport,
		Wire:      s.wsWires.For(deflate),
		OnGone:    wc.Gone,
	})
	wc.Sess = sess
	c := sess.c
	info := s.connected(sess)
	connected := wst.Seal(protocol.AppendConnected(wst.NewFrameBuffer(160), &info))
	var setup func()
	if echo {
		connected, subs = nil, nil
	}
	if len(subs) > 0 {
		setup = func() { sess.subscribeAll(subs, wst.Out{C: c}) }
	}
	if err := c.Greet(response, connected, setup); err != nil {
		if ref := s.limitRefusal(err, id.UserID, nc.RemoteAddr()); ref != nil {
			writeRefusal(nc, ref) // the 101 was held, not sent: an HTTP answer still fits
			c.Gone(0)
			return
		}
		if !errors.Is(err, hub.ErrShuttingDown) { // else greeted and closed with 1001
			s.log.Debug("upgrade failed: writing the handshake response", "err", err, "remote", nc.RemoteAddr())
		}
		return
	}
	s.log.Debug("client connected", "client", c.ID, "user", id.UserID, "org", id.OrgID, "deflate", deflate)
	if pending != nil {
		s.group.Go(func() { wc.Watch(s.poller, pending) })
	} else {
		wc.Watch(s.poller, nil)
	}
}

// authenticate establishes the connection's identity from a verified token
// or, only with --insecure-query-auth, from query parameters.
func (s *Server) authenticate(token string, query func() url.Values) (auth.Identity, error) {
	if token == "" {
		if s.cfg.InsecureQueryAuth {
			return insecureIdentity(query())
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

// newClientID returns 96 random bits in hex. A client ID names a
// connection — presence shows it to other users — and grants nothing, so it
// comes from math/rand/v2, whose generator (ChaCha8 per thread, seeded by the
// OS) costs no system call; crypto/rand makes a getrandom(2) call per
// connection on kernels without the vDSO getrandom (before Linux 6.11).
func newClientID() string {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint32(b[8:], rand.Uint32())
	return hex.EncodeToString(b[:])
}

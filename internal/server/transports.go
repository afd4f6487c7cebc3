package server

import (
	"log/slog"
	"net"
	"net/url"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/gogroup"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/netpoll"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/sparselog"
	"github.com/herald-rt/herald/internal/transport"
	"github.com/herald-rt/herald/internal/transport/socketio"
	"github.com/herald-rt/herald/internal/transport/sse"
)

// transports lists the ways of connecting to herald besides the native
// WebSocket endpoint (which the accept loop serves itself, see upgrade.go):
// one line per transport package. Each is mounted when the server is built
// (see transport.Transport).
func (s *Server) transports() []transport.Transport {
	return []transport.Transport{socketio.New(), sse.New()}
}

// host is the transport.Host the server offers its transports.
type host struct{ s *Server }

var _ transport.Host = host{}

func (h host) Hub() *hub.Hub             { return h.s.hub }
func (h host) Config() *config.Config    { return &h.s.cfg }
func (h host) Log() *slog.Logger         { return h.s.log }
func (h host) Sparse() *sparselog.Logger { return h.s.sparse }
func (h host) Metrics() *metrics.Metrics { return h.s.metrics }
func (h host) Poller() *netpoll.Poller   { return h.s.poller }
func (h host) Group() *gogroup.Group     { return &h.s.group }
func (h host) BrokerLive() bool          { return h.s.brokerUp() }
func (h host) Connected(sess transport.Session) protocol.Connected {
	return h.s.connected(sess.(*session))
}

func (h host) Admit(origin, hostName, token string, query func() url.Values, remote any) (auth.Identity, *transport.Refusal) {
	return h.s.admit(origin, hostName, token, query, remote)
}

func (h host) NewSession(id auth.Identity, nc net.Conn, o hub.ClientOptions) transport.Session {
	return h.s.newSession(id, nc, o)
}

func (h host) LimitRefusal(err error, user string, remote any) *transport.Refusal {
	return h.s.limitRefusal(err, user, remote)
}

// connected describes sess for its greeting.
func (s *Server) connected(sess *session) protocol.Connected {
	return protocol.Connected{
		ClientID:     sess.c.ID,
		UserID:       sess.id.UserID,
		Role:         sess.id.Role,
		OrgID:        sess.id.OrgID,
		Time:         sess.c.ConnectedAt,
		PingInterval: s.cfg.PingInterval,
	}
}

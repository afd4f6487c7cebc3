// Package transport is the contract between herald's sessions and the
// transports that carry them: the native WebSocket protocol
// (internal/transport/ws), and any other way of reaching herald (Socket.IO,
// Server-Sent Events…), each a package of its own.
//
// Three parties meet here:
//
//   - The hub (internal/hub) holds clients, channels and bounded byte
//     queues. A transport gives each of its connections a hub.Client whose
//     hub.Transport frames keepalives and closes, whose hub.Wire says how
//     shared messages (publications, join/leave notices) are encoded for it,
//     and, optionally, whose hub.PerClient adds per-client bytes around them.
//   - The session (Session, implemented by internal/server) runs commands:
//     subscriptions with recovery, publications, history, presence, and the
//     permissions and rate limits around them. It speaks the native
//     protocol's commands (protocol.Command) and answers with the native
//     protocol's JSON documents, through an Out; it never knows which
//     transport carries it.
//   - The transport (Transport, one per package) accepts connections,
//     authenticates them through its Host, turns what its clients send into
//     commands for the session, and frames the session's answers and the
//     hub's messages for its wire.
//
// A new transport is a new package implementing Transport, plus one line
// in the server's list of transports (internal/server, transports.go).
package transport

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"net/url"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/gogroup"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/netpoll"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/sparselog"
)

// Transport is one way of connecting to herald. The server calls Mount
// once, while it is built, before it serves anything; a transport registers
// its wires on host.Hub() there and adds its endpoints to mux.
type Transport interface {
	// Name identifies the transport in logs ("sse", "socketio").
	Name() string
	// Mount adds the transport's endpoints to mux. An error stops the
	// server from starting.
	Mount(mux *http.ServeMux, host Host) error
}

// Closer is implemented by a transport that holds connections the hub
// does not know yet (an Engine.IO session before its Socket.IO CONNECT):
// the server calls Close once while shutting down, after the hub's clients
// are closed, and Close ends them.
type Closer interface {
	Close()
}

// RawAcceptor is implemented by a transport some of whose WebSocket
// upgrades the server's accept loop makes itself, without net/http (as it
// does /ws's): TakesRaw says which, from the request-target of a GET
// (path and undecoded query); AcceptRaw is then handed each connection so
// upgraded, its handshake response held, on a goroutine the server's
// group counts. AcceptRaw owns the connection; it must write up.Response
// before it returns (the buffer is reused afterwards).
type RawAcceptor interface {
	TakesRaw(target []byte) bool
	AcceptRaw(up RawUpgraded)
}

// RawUpgraded is a WebSocket upgraded by the accept loop (RawAcceptor):
// the request's origin was checked (--allowed-origins), nothing else.
type RawUpgraded struct {
	NC net.Conn
	// Response is the held 101 response, to be written before anything.
	Response []byte
	// Pending holds what the client sent behind its request, or is nil.
	Pending *bufio.Reader
	// RawQuery is the request's query, undecoded; Authorization, Origin
	// and Host its header fields.
	RawQuery, Authorization, Origin, Host string
}

// Host is what the server offers its transports. All methods are safe for
// concurrent use.
type Host interface {
	// Hub is the node's hub: register wires on it in Mount.
	Hub() *hub.Hub
	// Config is the server's configuration; it must not be changed.
	Config() *config.Config
	Log() *slog.Logger
	// Sparse is the server's log for what clients can cause over and over
	// (refusals, closes for cause): one line per reason per interval, with
	// the count. Every such line goes through it.
	Sparse() *sparselog.Logger
	Metrics() *metrics.Metrics
	// Poller tells when a connection is readable without a goroutine
	// parked per connection.
	Poller() *netpoll.Poller
	// Group counts per-connection goroutines: start every goroutine a
	// connection needs with Group().Go (and delayed calls with AfterFunc),
	// so that the server's shutdown waits for them.
	Group() *gogroup.Group
	// BrokerLive reports whether the broker serves requests: false while
	// a broker that joins nodes (Redis) has not reached and verified its
	// store, as after the node starts or loses it; every subscribe,
	// publish and history is refused as unavailable then, for now.
	BrokerLive() bool
	// Admit decides whether a new connection may open: not while the
	// server drains, not past the connection limit, only from an allowed
	// origin (origin and host as the request gives them; origin empty for
	// non-browser clients) and only with a valid identity (token, or with
	// --insecure-query-auth the query's userId/role/org; query is called
	// only then). remote is only logged. It counts and logs refusals.
	Admit(origin, host, token string, query func() url.Values, remote any) (auth.Identity, *Refusal)
	// NewSession makes the session of a connection admitted with id, and
	// its hub client on nc with o (the hub.ClientOptions the transport
	// chooses: Transport, Wire, PerClient, OneWay, OnGone; ID, UserID,
	// OrgID and ExpiresAt are filled in from id). The client is not
	// registered yet: the transport greets it (hub.Client.Greet), which
	// registers it; a client that is never greeted must be ended with
	// hub.Client.Gone.
	NewSession(id auth.Identity, nc net.Conn, o hub.ClientOptions) Session
	// Connected describes sess for its greeting (the native protocol's
	// connected document: AppendConnected).
	Connected(sess Session) protocol.Connected
	// LimitRefusal is the answer to a Greet that a connection limit
	// refused (hub.ErrServerFull, hub.ErrUserFull), counted and logged;
	// nil for any other error.
	LimitRefusal(err error, user string, remote any) *Refusal
}

// Refusal is a connection turned down before it opened: the HTTP status
// and the native error code and message to answer with.
type Refusal struct {
	Status  int
	Code    string
	Message string
}

// Session is the transport-independent side of one connection. Its
// methods are called by the connection's transport only, one at a time
// (a connection's commands run in order), and never while the transport
// holds a lock the session might need.
type Session interface {
	// Handle runs one command in the native protocol's JSON. It counts
	// against the rate limit first, then is decoded and validated; every
	// outcome, error included, is answered through out.
	Handle(data []byte, out Out)
	// Run runs one command the transport decoded itself, or mapped from
	// its own protocol's events (a Socket.IO join:analytics becomes a
	// subscribe), exactly as Handle would after decoding: rate limit,
	// validation, permissions, recovery (Command.Since), answers through
	// out.
	Run(cmd *protocol.Command, out Out)
	// Admit counts an inbound message that is no command (a WebSocket ping,
	// a frame the protocol refuses) against the rate limit, and reports
	// whether it may be handled; when not, the session has answered
	// through out or closed the client.
	Admit(out Out) bool
	// Error answers through out with a native error document.
	Error(out Out, code protocol.Code, msg string)
	// Client is the session's hub client.
	Client() *hub.Client
	// Identity is who the connection authenticated as.
	Identity() auth.Identity
}

// Out is where a session's answers go: implemented by a transport, which
// frames them for its clients. A transport may hand a session a different
// Out per command (an SSE POST answers in its HTTP response, while the
// publications a subscribe replays still go to the event stream).
//
// Documents are the native protocol's JSON (protocol.Append*: subscribed,
// unsubscribed, published, history, presence, pong, error…), each with the
// command's id when it had one. The session calls an Out from the goroutine
// running the command, possibly with a broker lock held (Subscribed): an
// Out must not block or call back into the session.
type Out interface {
	// Buffer returns an empty buffer with capacity for about n bytes that
	// the session appends one document to and passes to Reply, Burst or
	// Subscribed. A transport may reserve room in front of it (WebSocket's
	// frame header) to frame the document in place.
	Buffer(n int) []byte
	// Reply answers with doc, within the client's queue bound.
	Reply(doc []byte)
	// Burst answers with doc exempt from the queue bound: a history or a
	// presence reply, whose size the session has bounded. It reports false
	// when the client is closing.
	Burst(doc []byte) bool
	// Subscribed answers a subscribe: doc (the subscribed document) and
	// the publications replayed for its since (oldest first; none without
	// since), as one burst exempt from the queue bound (the session bounds
	// it), ahead of every live publication of the channel — the session
	// calls it inside the broker's atomic join. sub tells where the
	// channel's stream stands, for transports that keep positions (an SSE
	// stream's id). It reports false when the client is closing.
	Subscribed(doc []byte, sub Subscription, replay []*hub.Message) bool
}

// Subscription is where a channel's stream stands for a subscriber when it
// joined: the position its replay ends at and live publications continue
// from, and whether the replay is everything since the position asked for.
type Subscription struct {
	Channel  string
	Position protocol.Position
	// Recovered is nil without since; else whether nothing was missed.
	Recovered *bool
}

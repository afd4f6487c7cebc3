// Package server wires herald together: the HTTP server, the WebSocket
// endpoint, the server API, health and metrics, and graceful shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/budget"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/gogroup"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/netpoll"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/sparselog"
	"github.com/herald-rt/herald/internal/transport"
	"github.com/herald-rt/herald/internal/transport/ws"
)

// Broker sweep cadence: expired history is dropped and idle channel streams
// freed every brokerSweep; a stream with no history and no subscribers is
// kept for brokerIdle after its last use.
const (
	brokerSweep = 10 * time.Second
	brokerIdle  = time.Minute
)

// Server is one herald node.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	hub      *hub.Hub
	broker   guardedBroker  // every call goes through it
	verifier *auth.Verifier // nil when no key is configured (insecure query auth only)
	policy   *auth.Policy
	poller   *netpoll.Poller
	apiKeys  [][]byte
	started  time.Time
	draining atomic.Bool
	// rawUpgrader upgrades the WebSocket requests the accept loop reads.
	rawUpgrader ws.RawUpgrader
	// originUpgrader upgrades what a RawAcceptor takes: the origin
	// checked, the rest (a token in a later message) the transport's.
	originUpgrader ws.RawUpgrader
	rawAcceptors   []transport.RawAcceptor
	mounted        []transport.Transport
	// group counts every per-connection goroutine (see gogroup): Serve
	// returns once all have exited, or its shutdown budget is spent.
	group gogroup.Group
	// wsWires and wsTransport are the native WebSocket transport's wires
	// and hub.Transport.
	wsWires     ws.Wires
	wsTransport *ws.Transport
	wsConn      ws.ConnOptions
	mux         *http.ServeMux
	// sniffing holds the connections whose request head the accept loop
	// is reading (*net.TCPConn keys); sniffCut is set once Serve has cut
	// them at its shutdown.
	sniffing sync.Map
	sniffCut atomic.Bool
	// sparse logs every flood of like events (refusals, closes for cause,
	// history dropped): one line per reason per sparselog.Interval, with the
	// count since the last.
	sparse *sparselog.Logger
	// budget counts what is held for clients (--max-queued-bytes,
	// --max-user-queued-bytes); keysRefused counts idempotency_full.
	budget      *budget.Budget
	keysRefused prometheus.Counter
	// maxConns is the connection limit in force: --max-connections, or the
	// one derived from the descriptor limit; 0 means none.
	maxConns int
	// httpRead and httpWrite bound one HTTP request's reading and its
	// answer's writing (httpReadTimeout, httpWriteTimeout; shorter in tests).
	httpRead, httpWrite time.Duration
	// headRead bounds the accept loop's reading of a new connection's
	// request head (headTimeout; shorter in tests).
	headRead time.Duration
}

// autoMaxConnections is the connection limit --max-connections 0 derives
// from the descriptor limit: all of it but a sixteenth (at least 64), which
// stays for the listener, the poller, API requests, metrics scrapes and
// files. With the limit this full, upgrades get a 503 while /healthz, the
// API and /metrics keep working, instead of accept failing for everyone. 0
// (no limit) when the descriptor limit is unknown or practically unlimited.
func autoMaxConnections(fdLimit uint64) int {
	switch {
	case fdLimit == 0 || fdLimit > 1<<30:
		return 0
	case fdLimit < 128:
		return int(fdLimit / 2)
	}
	return int(fdLimit - max(fdLimit/16, 64))
}

// New builds a server from a validated configuration.
func New(cfg config.Config, log *slog.Logger) (*Server, error) {
	s := &Server{
		cfg:       cfg,
		log:       log,
		metrics:   metrics.New(),
		policy:    auth.NewPolicy(cfg.Namespaces),
		started:   time.Now(),
		sparse:    sparselog.New(log, sparselog.Interval),
		maxConns:  cfg.MaxConnections,
		httpRead:  httpReadTimeout,
		httpWrite: httpWriteTimeout,
		headRead:  headTimeout,
	}
	if s.maxConns == 0 {
		s.maxConns = autoMaxConnections(descriptorLimit())
	}
	s.rawUpgrader = ws.RawUpgrader{Compression: cfg.Compression, Admit: s.admit}
	s.originUpgrader = ws.RawUpgrader{Admit: s.admitOrigin}
	for _, k := range cfg.APIKeys {
		s.apiKeys = append(s.apiKeys, []byte(k))
	}
	if cfg.JWTSecret != "" || cfg.JWTPublicKeyFile != "" {
		vo := auth.VerifierOptions{HMACSecret: []byte(cfg.JWTSecret)}
		if cfg.JWTPublicKeyFile != "" {
			pem, err := os.ReadFile(cfg.JWTPublicKeyFile)
			if err != nil {
				return nil, fmt.Errorf("jwt public key: %w", err)
			}
			vo.PublicKeyPEM = pem
		}
		v, err := auth.NewVerifier(vo)
		if err != nil {
			return nil, fmt.Errorf("jwt: %w", err)
		}
		s.verifier = v
	}
	s.setupBudget()
	s.hub = hub.New(hub.Options{
		QueueBytes:         queueBytes(cfg),
		PingInterval:       cfg.PingInterval,
		PongTimeout:        cfg.PongTimeout,
		MaxSubscriptions:   cfg.MaxSubscriptions,
		MaxConnections:     s.maxConns,
		MaxUserConnections: cfg.MaxUserConnections,
		OnRemove:           s.onRemove,
		IOUring:            cfg.IOUring,
		Group:              &s.group,
		Sparse:             s.sparse,
	}, log, s.metrics)
	s.wsWires = ws.Register(s.hub, compressMin(cfg))
	s.wsTransport = ws.NewTransport()
	s.wsConn = ws.ConnOptions{MaxMessage: cfg.MaxMessageBytes, ReadTimeout: cfg.PongTimeout, Log: log, Sparse: s.sparse, Metrics: s.metrics}
	if err := s.setupBroker(); err != nil {
		return nil, err
	}
	p, err := netpoll.New(&s.group)
	if err != nil {
		return nil, err
	}
	s.poller = p
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET "+s.cfg.WSPath, s.handleWS)
	if s.cfg.ConformanceEchoPath != "" {
		s.mux.HandleFunc("GET "+s.cfg.ConformanceEchoPath, s.handleWS) // it tells the two apart
	}
	s.mux.HandleFunc("GET /healthz", s.handleHealth)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	s.routeAPI(s.mux)
	for _, t := range s.transports() {
		if err := t.Mount(s.mux, host{s}); err != nil {
			return nil, fmt.Errorf("transport %s: %w", t.Name(), err)
		}
		s.mounted = append(s.mounted, t)
		if a, ok := t.(transport.RawAcceptor); ok {
			s.rawAcceptors = append(s.rawAcceptors, a)
		}
	}
	return s, nil
}

// Hub exposes the hub (for tests and embedding).
func (s *Server) Hub() *hub.Hub { return s.hub }

// Handler returns the HTTP handler serving every endpoint: the API, health,
// metrics, the native WebSocket path and every transport's endpoints.
//
// A request net/http's mux would redirect — a path that is not clean
// (//ws, /./ws), or a subtree's name without its slash (/api) — is
// answered 404 instead: the redirect repeats the query in its Location
// and body, and with it a token given as ?token=.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p != cleanPath(p) {
		http.NotFound(w, r)
		return
	}
	if _, pattern := s.mux.Handler(r); strings.HasSuffix(pattern, p+"/") {
		http.NotFound(w, r) // the mux would redirect to p+"/"
		return
	}
	s.mux.ServeHTTP(w, r)
}

// cleanPath is p as net/http's mux wants it: rooted, without . or ..
// elements or repeated slashes, its trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

// Serve accepts connections on ln until ctx is done, then shuts down
// gracefully: close every client with 1001 after flushing its queue (the
// port still answers meanwhile, /healthz with 503), then stop accepting and
// let HTTP requests in flight finish, and return once all are done and
// every goroutine started for a connection has exited, or ShutdownTimeout
// has passed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hctx, stopHub := context.WithCancel(context.Background())
	defer stopHub()
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); s.hub.Run(hctx) }()
	pollerDone := make(chan struct{})
	go func() {
		defer close(pollerDone)
		if err := s.poller.Run(hctx); err != nil {
			s.log.Error("poller stopped", "err", err)
		}
	}()
	brokerDone := make(chan struct{})
	go func() {
		defer close(brokerDone)
		s.runBroker(hctx)
	}()

	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: headTimeout,
		// A request (head and body) and its answer are bounded in time, so a
		// client that sends a body slowly or never reads the answer cannot
		// hold a descriptor and a goroutine without end, nor hold up a
		// shutdown. An upgrade clears both deadlines after the hijack.
		ReadTimeout:  s.httpRead,
		WriteTimeout: s.httpWrite,
		IdleTimeout:  120 * time.Second,
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	// herald's accept loop upgrades WebSocket requests itself (upgrade.go)
	// and hands every other connection to net/http through fl.
	fl := newForkListener(ln)
	errc := make(chan error, 2)
	s.group.Go(func() { errc <- hs.Serve(fl) })
	s.group.Go(func() {
		if err := s.acceptLoop(fl); err != nil {
			errc <- err
		}
	})
	if s.cfg.DebugAddr != "" {
		dbg, err := s.serveDebug(s.cfg.DebugAddr)
		if err != nil {
			_ = hs.Close()
			return err
		}
		defer dbg.Close()
	}
	s.log.Info("herald listening", "addr", ln.Addr().String(), "ws_path", s.cfg.WSPath, "max_connections", s.maxConns, "broker", s.cfg.Broker)
	if s.cfg.ConformanceEchoPath != "" {
		s.log.Warn("conformance echo endpoint on: it echoes whatever its clients send, for conformance suites only; leave --conformance-echo-path unset in production", "path", s.cfg.ConformanceEchoPath)
	}
	if d, ok := s.broker.b.(broker.Describer); ok {
		s.log.Info("broker", d.Describe()...)
	}
	if s.cfg.InsecureQueryAuth {
		s.log.Warn("insecure query auth is ON: clients choose their identity with ?userId=; never use in production")
	}
	if len(s.apiKeys) == 0 {
		s.log.Warn("no API key configured: the server API answers 403")
	}
	if n := len(s.cfg.JWTSecret); n > 0 && n < config.MinJWTSecretLen {
		s.log.Warn("jwt-secret is shorter than the 32 bytes HS256 needs (RFC 7518): anyone with one token can guess it offline and forge tokens for any user", "bytes", n)
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "clients", s.hub.NumClients(), "timeout", s.cfg.ShutdownTimeout.String())
	s.draining.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	// The WebSocket clients first, while net/http still answers: their 1001
	// does not wait behind a slow HTTP request, and meanwhile /healthz says
	// draining and upgrades are refused. Then the listener closes and the
	// requests in flight get what is left of the budget.
	if herr := s.hub.Shutdown(sctx); herr != nil {
		s.log.Warn("clients did not close in time; dropped", "err", herr)
	}
	for _, t := range s.mounted {
		if c, ok := t.(transport.Closer); ok {
			c.Close()
		}
	}
	err := hs.Shutdown(sctx)
	if err != nil {
		s.log.Warn("HTTP requests did not finish in time; cut", "err", err)
		_ = hs.Close()
	}
	s.cutSniffers()
	stopHub()
	<-hubDone
	<-brokerDone
	<-pollerDone
	// Every goroutine started for a connection (see group) has a bounded
	// exit: wait for them within what is left of the budget.
	if gerr := s.group.Wait(sctx); gerr != nil {
		s.log.Warn("connection goroutines still running at the end of the shutdown budget", "running", s.group.Running())
		if err == nil {
			err = gerr
		}
	}
	_ = s.poller.Close()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	s.log.Info("shutdown complete")
	return nil
}

// Bounds on one HTTP request of the server API (see Serve): reading it
// (head and body: the largest body with the default --max-message-bytes,
// 1 MiB, arrives in time at 36 KB/s), and writing its answer.
const (
	httpReadTimeout  = 30 * time.Second
	httpWriteTimeout = 60 * time.Second
)

// envelopeSlack is room for what wraps a message's data: in an API request
// (channel, event, idempotency key) and in a delivery (type, channel, event,
// offset, epoch, timestamp, publisher, frame header).
const envelopeSlack = 64 << 10

// queueBytes is the per-client queue bound: --client-queue-bytes, but never
// less than one largest message in its envelope, or a subscriber with an
// empty queue would be closed as slow by a message the server accepted.
func queueBytes(cfg config.Config) int {
	return int(max(cfg.ClientQueueBytes, cfg.MaxMessageBytes+envelopeSlack))
}

// compressMin is the hub's compression threshold (0: never compress).
func compressMin(cfg config.Config) int {
	if !cfg.Compression {
		return 0
	}
	return max(1, int(cfg.CompressionThreshold))
}

// minReplayBytes is the least a recovering subscriber may be replayed at once.
const minReplayBytes = 16 << 20

// maxReplayBytes bounds one subscribe's replay burst and one history reply:
// 16 MiB, or the client queue, or one largest message with room to spare,
// whichever is largest.
func (s *Server) maxReplayBytes() int {
	return max(minReplayBytes, queueBytes(s.cfg))
}

// historyEntryBytes is about what p takes in a history reply.
func historyEntryBytes(p *broker.Publication) int {
	return 96 + len(p.Data) + len(p.From) + len(p.Event)
}

// fitPresence returns the first entries of clients that fit in budget bytes
// of a presence reply, and whether any were left out.
func fitPresence(clients []hub.PresenceInfo, budget int) ([]hub.PresenceInfo, bool) {
	// At worst every byte of the ids escaped, plus the time and the JSON
	// around them.
	return fit(clients, budget, false, func(c *hub.PresenceInfo) int { return 2*(len(c.ClientID)+len(c.UserID)) + 80 })
}

// fitHistory returns the publications of pubs (oldest first) whose entries
// fit in budget bytes — the newest ones when newest is set (a query without
// since), else the oldest (a query with since, which continues from the
// last one) — and whether any were left out.
func fitHistory(pubs []broker.Publication, budget int, newest bool) ([]broker.Publication, bool) {
	return fit(pubs, budget, newest, historyEntryBytes)
}

// fit returns the items whose costs together fit in budget — the first ones,
// or the last ones when last is set — and whether any were left out.
func fit[T any](items []T, budget int, last bool, cost func(*T) int) ([]T, bool) {
	total := 0
	if last {
		for i := len(items) - 1; i >= 0; i-- {
			if total += cost(&items[i]); total > budget {
				return items[i+1:], true
			}
		}
		return items, false
	}
	for i := range items {
		if total += cost(&items[i]); total > budget {
			return items[:i], true
		}
	}
	return items, false
}

// historyDropped is the broker's OnDrop: n publications were dropped from
// history, or not kept, to stay within --history-max-bytes. It runs under a
// channel's lock, so it only counts; the warning is spaced by drops.
func (s *Server) historyDropped(n int) {
	s.metrics.HistoryDropped.Add(float64(n))
	s.sparse.Note("history dropped", int64(n), func(count int64) {
		s.log.Warn("history budget reached: channels drop their oldest publications, and recovery past them reports a gap",
			"history_max_bytes", s.cfg.HistoryMaxBytes, "dropped", count)
	})
}

// deliver is the broker's DeliverFunc: encode the publication once and fan
// it out to this node's subscribers.
func (s *Server) deliver(channel string, p *broker.Publication) int {
	m := s.hub.Publication(message(channel, p))
	var exclude *hub.Client
	if p.Origin != "" {
		exclude = s.hub.Client(p.Origin)
	}
	return s.hub.Publish(channel, m, exclude, p.Event)
}

// message converts a broker publication for encoding.
func message(channel string, p *broker.Publication) protocol.Message {
	return protocol.Message{Channel: channel, Data: p.Data, Time: p.Time, From: p.From, Offset: p.Offset, Event: p.Event, Epoch: p.Epoch}
}

// historyOptions are a namespace's retention as the broker takes it.
func historyOptions(ns auth.Resolved) broker.HistoryOptions {
	return broker.HistoryOptions{Size: ns.HistorySize, TTL: ns.HistoryTTL}
}

// publishOptions are the broker options for a publication in namespace ns.
func (s *Server) publishOptions(ns auth.Resolved, idemKey string) broker.PublishOptions {
	return broker.PublishOptions{
		History:           historyOptions(ns),
		IdempotencyKey:    idemKey,
		IdempotencyWindow: s.cfg.IdempotencyWindow,
	}
}

// onRemove announces a departed client's leave on channels that want it.
func (s *Server) onRemove(c *hub.Client, channels []string) {
	for _, ch := range channels {
		s.announce(protocol.TypeLeave, ch, c)
	}
}

// announce sends a join or leave notice for c on channel when its namespace
// asks for them.
func (s *Server) announce(typ, channel string, c *hub.Client) {
	if !s.policy.Namespace(channel).JoinLeave {
		return
	}
	m := s.hub.Notice(protocol.JoinLeave{Type: typ, Channel: channel, ClientID: c.ID, UserID: c.UserID})
	// A join not once c has left: its leave may be out already.
	s.hub.Announce(channel, m, c, typ == protocol.TypeJoin)
}

// Listen opens the server's TCP listener. Accepted connections get no TCP
// keep-alive: WebSocket connections are checked by herald's own pings and
// idle HTTP connections by the server's idle timeout, and turning it on
// costs four setsockopt calls per accepted connection.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(ctx, "tcp", addr)
}

// serveDebug serves net/http/pprof on its own listener, never on the public port.
func (s *Server) serveDebug(addr string) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	s.log.Info("pprof listening", "addr", ln.Addr().String())
	return hs, nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "draining"})
		return
	}
	if !s.brokerUp() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "broker_unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

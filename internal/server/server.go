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
	"os"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/metrics"
)

// Server is one herald node.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	hub      *hub.Hub
	verifier *auth.Verifier // nil when no key is configured (insecure query auth only)
	policy   *auth.Policy
	upgrader *gws.Upgrader
	apiKeys  [][]byte
	started  time.Time
	draining atomic.Bool
}

// New builds a server from a validated configuration.
func New(cfg config.Config, log *slog.Logger) (*Server, error) {
	s := &Server{
		cfg:     cfg,
		log:     log,
		metrics: metrics.New(),
		policy:  auth.NewPolicy(cfg.Namespaces),
		started: time.Now(),
	}
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
	s.hub = hub.New(hub.Options{
		QueueBytes:       int(cfg.ClientQueueBytes),
		PingInterval:     cfg.PingInterval,
		PongTimeout:      cfg.PongTimeout,
		MaxSubscriptions: cfg.MaxSubscriptions,
	}, log, s.metrics)
	s.upgrader = gws.NewUpgrader(&wsHandler{srv: s}, &gws.ServerOption{
		ReadMaxPayloadSize: int(cfg.MaxMessageBytes),
		ReadBufferSize:     2048,
		CheckUtf8Enabled:   false, // checked in OnMessage, to close with 1007
		HandshakeTimeout:   10 * time.Second,
		NewSession:         func() gws.SessionStorage { return &sessionSlot{} },
		Logger:             gwsLogger{log},
		Recovery:           gws.Recovery,
	})
	return s, nil
}

// Hub exposes the hub (for tests and embedding).
func (s *Server) Hub() *hub.Hub { return s.hub }

// Handler returns the HTTP handler serving every endpoint.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+s.cfg.WSPath, s.handleWS)
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	s.routeAPI(mux)
	return mux
}

// Serve accepts connections on ln until ctx is done, then shuts down
// gracefully: stop accepting, close every client with 1001 after flushing its
// queue, and return once all are gone or ShutdownTimeout has passed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hctx, stopHub := context.WithCancel(context.Background())
	defer stopHub()
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); s.hub.Run(hctx) }()

	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("herald listening", "addr", ln.Addr().String(), "ws_path", s.cfg.WSPath)
	if s.cfg.InsecureQueryAuth {
		s.log.Warn("insecure query auth is ON: clients choose their identity with ?userId=; never use in production")
	}
	if len(s.apiKeys) == 0 {
		s.log.Warn("no API key configured: the server API answers 403")
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
	err := hs.Shutdown(sctx)
	if herr := s.hub.Shutdown(sctx); herr != nil {
		s.log.Warn("clients did not close in time; dropped", "err", herr)
	}
	stopHub()
	<-hubDone
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	s.log.Info("shutdown complete")
	return nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "draining"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// gwsLogger routes the WebSocket library's rare log lines to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("websocket", "detail", fmt.Sprint(v...)) }

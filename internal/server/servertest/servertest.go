// Package servertest starts a real herald on a random loopback port for
// tests in other packages (the end-to-end tests, herald bench's tests).
package servertest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/server"
)

// Credentials every test server accepts.
const (
	Secret = "test-secret-0123456789abcdef"
	APIKey = "test-api-key-0123456789"
)

// Server is a running herald.
type Server struct {
	*server.Server
	// Addr is the listening host:port.
	Addr   string
	t      testing.TB
	cancel context.CancelFunc
	done   chan error
}

// Start runs herald with test defaults (HS256 with Secret, APIKey, a 5 s
// shutdown timeout) changed by mutate, and stops it when the test ends.
// Logs go to stderr at error level, or debug with HERALD_TEST_LOG set.
func Start(t testing.TB, mutate func(*config.Config)) *Server {
	t.Helper()
	level := slog.LevelError
	if os.Getenv("HERALD_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return StartLogged(t, mutate, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil)
}

// StartLogged is Start with the server's log written to log, and prepare,
// when not nil, called on the server after it is made and before it
// serves.
func StartLogged(t testing.TB, mutate func(*config.Config), log *slog.Logger, prepare func(*server.Server)) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.JWTSecret = Secret
	cfg.APIKeys = []string{APIKey}
	cfg.ShutdownTimeout = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(srv)
	}
	ln, err := server.Listen(context.Background(), cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Server: srv, Addr: ln.Addr().String(), t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { s.Stop() })
	return s
}

// Stop shuts the server down and returns Serve's result; it may be called
// more than once.
func (s *Server) Stop() error {
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(15 * time.Second):
		s.t.Error("server did not shut down")
		return nil
	}
}

// WSURL is the WebSocket URL on the default path.
func (s *Server) WSURL() string { return "ws://" + s.Addr + "/ws" }

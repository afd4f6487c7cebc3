package server

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-rt/herald/internal/config"
)

// failingListener fails its first fails accepts (like a process out of file
// descriptors), then blocks until closed.
type failingListener struct {
	fails  atomic.Int32
	closed chan struct{}
}

var errTooManyFiles = errors.New("accept: too many open files")

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, errTooManyFiles
	}
	<-l.closed
	return nil, net.ErrClosed
}
func (l *failingListener) Close() error   { close(l.closed); return nil }
func (l *failingListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestAcceptErrorsAreRetried: a failing accept is counted, logged and
// retried after a pause instead of ending the server; closing the listener
// ends the loop.
func TestAcceptErrorsAreRetried(t *testing.T) {
	cfg := config.Default()
	cfg.JWTSecret = "0123456789abcdef0123456789abcdef"
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{closed: make(chan struct{})}
	ln.fails.Store(3)
	fl := newForkListener(ln)
	done := make(chan error, 1)
	go func() { done <- s.acceptLoop(fl) }()
	deadline := time.Now().Add(5 * time.Second)
	for acceptErrors(s) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("accept errors counted: %v, want 3", acceptErrors(s))
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("accept loop ended after accept errors: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	_ = fl.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("accept loop after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("accept loop did not end when the listener closed")
	}
}

func acceptErrors(s *Server) float64 { return counterValue(s.metrics.AcceptErrors) }

// counterValue reads a Prometheus counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// TestHistoryDropsAreLoggedSparingly: publications dropped for the history
// budget are all counted, and logged at most once per interval with how
// many were dropped since the last line — a flood is one line, not one per
// publication.
func TestHistoryDropsAreLoggedSparingly(t *testing.T) {
	s, logs, _ := sparseServer(t, nil)
	for range 5 {
		s.historyDropped(3)
	}
	if got := counterValue(s.metrics.HistoryDropped); got != 15 {
		t.Fatalf("herald_history_dropped_total %v, want 15", got)
	}
	if n := strings.Count(logs.String(), "history budget reached"); n != 1 || !strings.Contains(logs.String(), "dropped=3") {
		t.Fatalf("%d warnings, want 1 saying dropped=3:\n%s", n, logs.String())
	}
	if n := s.sparse.Pending("history dropped"); n != 12 {
		t.Fatalf("%d drops waiting for the next warning, want 12", n)
	}
}

package server

import (
	"log/slog"
	"testing"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/sparselog"
	"github.com/herald-rt/herald/internal/testnet"
)

// sparseServer builds a server (not serving) with a JWT secret and what
// configure sets, whose log goes to the returned buffer, and whose sparse
// log's clock moves only when the test advances it.
func sparseServer(t *testing.T, configure func(*config.Config)) (*Server, *testnet.Buffer, *sparselog.ManualClock) {
	t.Helper()
	cfg := config.Default()
	cfg.JWTSecret = "0123456789abcdef0123456789abcdef"
	if configure != nil {
		configure(&cfg)
	}
	logs := new(testnet.Buffer)
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := new(sparselog.ManualClock)
	s.sparse.SetClock(clock.Now)
	return s, logs, clock
}

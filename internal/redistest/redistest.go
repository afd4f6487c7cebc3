// Package redistest starts a real redis-server for tests: on a Unix socket
// in a temporary directory, without persistence, stopped when the test (or
// TestMain) ends. Tests that need Redis fail, not skip, when redis-server
// is missing: CI installs it (see .ci/run).
package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server.
type Server struct {
	Socket string
	cmd    *exec.Cmd
	dir    string
	seq    atomic.Int64
}

// Start runs redis-server and waits until it answers. Stop it with Stop.
func Start() (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (install it: apt-get install redis-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "herald-redis-")
	if err != nil {
		return nil, err
	}
	s := &Server{Socket: filepath.Join(dir, "redis.sock"), dir: dir}
	s.cmd = exec.Command(bin, "--port", "0", "--unixsocket", s.Socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
	s.cmd.Stderr = os.Stderr // its log goes to stdout, discarded
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := s.Client()
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c.Ping(context.Background()).Err() == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redis-server did not answer within 10s on %s", s.Socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL is the server's address as herald's --redis-url takes it.
func (s *Server) URL() string { return "unix://" + s.Socket }

// Options says how to reach the server.
func (s *Server) Options() *redis.Options { return &redis.Options{Network: "unix", Addr: s.Socket} }

// Client returns a new client of the server.
func (s *Server) Client() *redis.Client { return redis.NewClient(s.Options()) }

// Prefix returns a key prefix no other caller of this server got, so that
// tests sharing the server never see each other's keys.
func (s *Server) Prefix() string { return "t" + strconv.FormatInt(s.seq.Add(1), 10) }

// Stop kills the server and removes its directory.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	os.RemoveAll(s.dir)
}

// Package redistest starts a real redis-server for tests: on a Unix socket
// in a temporary directory, stopped when the test (or TestMain) ends. Start
// runs it without persistence; StartDurable with an append-only file
// fsynced on every write, so that Restart brings back everything it
// acknowledged. Tests that need Redis fail, not skip, when redis-server is
// missing: CI installs it (see .ci/run).
package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server. Its methods other than Prefix are for
// the goroutine that started it.
type Server struct {
	Socket string
	cmd    *exec.Cmd
	dir    string
	args   []string
	seq    atomic.Int64
}

// Start runs redis-server without persistence and waits until it answers.
// Stop it with Stop.
func Start() (*Server, error) {
	return start("--save", "", "--appendonly", "no")
}

// StartDurable runs redis-server with an append-only file in its directory
// (appendonly yes, appendfsync always, no RDB snapshots), as a Redis whose
// history must survive a restart is configured, and waits until it
// answers. Stop it with Stop.
func StartDurable() (*Server, error) {
	return start("--save", "", "--appendonly", "yes", "--appendfsync", "always")
}

func start(persistence ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "herald-redis-")
	if err != nil {
		return nil, err
	}
	s := &Server{Socket: filepath.Join(dir, "redis.sock"), dir: dir}
	s.args = append([]string{"--port", "0", "--unixsocket", s.Socket, "--unixsocketperm", "700",
		"--dir", dir, "--loglevel", "warning"}, persistence...)
	if err := s.run(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// run starts redis-server on s's directory and waits until it answers.
func (s *Server) run() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server not found (install it: apt-get install redis-server): %w", err)
	}
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Stderr = os.Stderr // its log goes to stdout, discarded
	if err := s.cmd.Start(); err != nil {
		return err
	}
	c := s.Client()
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c.Ping(context.Background()).Err() == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server did not answer within 10s on %s", s.Socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Dir is the server's data directory (its append-only files, with
// StartDurable).
func (s *Server) Dir() string { return s.dir }

// Restart shuts the server down as a planned restart does (SHUTDOWN SAVE:
// what it holds is written to its files first), calls prepare on its data
// directory if prepare is not nil (to put older files in place, or remove
// them), and starts it again on the same directory and socket. The new
// process has another run id.
func (s *Server) Restart(prepare func(dir string) error) error {
	o := s.Options()
	o.MaxRetries = -1 // not again on the connection SHUTDOWN closed
	c := redis.NewClient(o)
	err := c.ShutdownSave(context.Background()).Err()
	c.Close()
	var refused redis.Error // else it answered by closing the connection
	if errors.As(err, &refused) {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := s.cmd.Wait(); err != nil {
		return fmt.Errorf("redis-server after SHUTDOWN: %w", err)
	}
	if prepare != nil {
		if err := prepare(s.dir); err != nil {
			return err
		}
	}
	return s.run()
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

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// Stop kills the server and removes its directory.
func (s *Server) Stop() {
	s.kill()
	os.RemoveAll(s.dir)
}

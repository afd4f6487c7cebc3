package server

import "time"

// CheckGoroutines is checkGoroutines, for the package's external tests.
var CheckGoroutines = checkGoroutines

// ConnGoroutines is how many per-connection goroutines and delayed calls
// the server counts (see gogroup).
func (s *Server) ConnGoroutines() int { return s.group.Running() }

// GoConn starts f as a per-connection goroutine (counted; see gogroup).
func (s *Server) GoConn(f func()) { s.group.Go(f) }

// SetLogClock makes the server's sparse log read the time from now. Call
// it before Serve.
func (s *Server) SetLogClock(now func() time.Time) { s.sparse.SetClock(now) }

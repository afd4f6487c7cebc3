package server

import (
	"net/http"
	"testing"

	"go.uber.org/goleak"
)

// leakOptions are what a leak check ignores: the idle keep-alive
// connections of the tests' own HTTP clients (closed first, but their
// goroutines take a moment to notice).
var leakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
}

// checkGoroutines fails t if, once the test and all its cleanups are done
// (its servers stopped, its clients closed), a goroutine started during the
// test still runs. Call it first in a test (or its helper), so that its
// cleanup runs last. goleak retries for a while before it reports: a
// goroutine on its way out is not a leak.
func checkGoroutines(t testing.TB) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if t.Failed() {
			return // a failed test may leave its server running; say only what failed
		}
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(append([]goleak.Option{before}, leakOptions...)...); err != nil {
			t.Errorf("goroutines leaked by the test: %v", err)
		}
	})
}

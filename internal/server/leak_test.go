package server

import (
	"net/http"
	"sync"
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

// checking holds the tests whose goroutines are checked already.
var checking sync.Map

// checkGoroutines fails t if, once the test and all its cleanups are done
// (its servers stopped, its clients closed), a goroutine started during the
// test still runs. Call it first in a test (or its helper), so that its
// cleanup runs last. goleak retries for a while before it reports: a
// goroutine on its way out is not a leak. Only a test's first call checks:
// a later one (a second server in the same test) would run its check while
// the first server still runs, and take that server's goroutines, some
// started after its snapshot, for leaks.
func checkGoroutines(t testing.TB) {
	if _, already := checking.LoadOrStore(t, true); already {
		return
	}
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		defer checking.Delete(t)
		if t.Failed() {
			return // a failed test may leave its server running; say only what failed
		}
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(append([]goleak.Option{before}, leakOptions...)...); err != nil {
			t.Errorf("goroutines leaked by the test: %v", err)
		}
	})
}

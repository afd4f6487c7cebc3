//go:build !linux || herald_portable

package server_test

// watchGoroutines is how many goroutines the poller runs per connection it
// watches: the portable poller reads each on a goroutine of its own.
const watchGoroutines = 1

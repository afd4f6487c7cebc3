//go:build linux && !herald_portable

package server_test

// watchGoroutines is how many goroutines the poller runs per connection it
// watches: none with epoll.
const watchGoroutines = 0

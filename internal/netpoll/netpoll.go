// Package netpoll tells when a connection has something to read, without a
// goroutine parked per connection: herald's idle connections then cost only
// their buffers-free state. On Linux it uses its own epoll instance in
// one-shot mode; elsewhere it falls back to one goroutine per connection.
//
// The protocol: Add registers a connection and a handler. When the
// connection becomes readable (data, EOF or error) the handler runs once on
// a goroutine of its own and is given the connection's Desc (it may run
// before Add has returned); it reads what it needs through the net.Conn as
// usual and then calls Resume on that Desc to be told about the next
// readiness, or Remove when it is done with the connection.
package netpoll

import "errors"

// ErrClosed is returned by Add after Close.
var ErrClosed = errors.New("netpoll: closed")

// goSpawn starts f on a plain goroutine.
func goSpawn(f func()) { go f() }

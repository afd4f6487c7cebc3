// Package sse is herald's Server-Sent Events transport: a client that
// cannot open a WebSocket reads one long HTTP response of events
// (text/event-stream) and sends its commands with POST.
//
// This file encodes the stream's bytes. Every event is complete in itself
// and ends with a blank line, so events from the same stream never
// interleave; what one subscriber's event shares with every other (its
// event and data lines) is encoded once per publication, and what differs
// per subscriber (the id line, see Cursor) is written in front of it.
package sse

import (
	"bytes"
	"strconv"
)

// Event names of the frames that are not publications. A publication's own
// event name (1–64 letters, digits or _ - : . @) can never contain '/', so
// no publication is taken for one of these.
const (
	EventPrefix = "herald/"
	// A publication without an event is sent without an event line, so
	// EventSource dispatches it as "message" (onmessage).
	EventMessage = "message"
)

// ControlEvent returns the event name of a frame of the native type typ
// that is not a publication: "herald/" + typ (herald/connected,
// herald/subscribed, herald/join, herald/leave, herald/close).
func ControlEvent(typ string) string { return EventPrefix + typ }

// Heartbeat is a comment line: EventSource ignores it, and it keeps
// proxies from closing an idle stream and the server learning late of a
// peer that is gone.
var Heartbeat = []byte(":\n")

// AppendEvent appends one event: an "event:" line when name is neither
// empty nor "message", one "data:" line per line of data, and the blank
// line that dispatches the event. data may hold line breaks (CR, LF or
// CRLF, as JSON whitespace may): each starts a new data line, and
// EventSource joins the lines with LF, which is the same JSON. name must
// not hold a line break (event names never do).
func AppendEvent(b []byte, name string, data []byte) []byte {
	if name != "" && name != EventMessage {
		b = append(b, "event: "...)
		b = append(b, name...)
		b = append(b, '\n')
	}
	for {
		i := bytes.IndexAny(data, "\r\n")
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			break
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(b, '\n', '\n')
}

// EventSize is an upper bound on what AppendEvent appends for name and a
// data of n bytes with lines line breaks.
func EventSize(name string, n, lines int) int {
	return len("event: \n") + len(name) + (lines+1)*len("data: \n") + n + 1
}

// AppendRetry appends a "retry:" field: EventSource waits ms milliseconds
// before it reconnects.
func AppendRetry(b []byte, ms int64) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, ms, 10)
	return append(b, '\n', '\n')
}

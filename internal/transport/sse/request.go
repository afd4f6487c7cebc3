package sse

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/herald-rt/herald/internal/protocol"
)

// Request is what a stream's GET asks for:
//
//	GET /sse?channel=a&channel=b        (or channel=a,b)
//	Last-Event-ID: <id>                 (or ?lastEventId=<id>; the header wins)
//
// The token (Authorization: Bearer, or ?token=) and, with
// --insecure-query-auth, the query identity are the server's to read.
type Request struct {
	// Channels are the channels named, in order, each once.
	Channels []string
	// Resume is set when the request gave a last event id: every channel
	// is then subscribed with recovery, from the position Claims gives it
	// or, when it gives none, from none (recovered:false).
	Resume bool
	// Claims are the positions the id claims.
	Claims Claims
	// BadID is set when the id was not one herald writes: it claims
	// nothing, so every channel reports recovered:false.
	BadID bool
}

// RequestError is a request the stream refuses before it starts, as the
// HTTP status and the error code and message of its JSON body.
type RequestError struct {
	Status  int
	Code    string
	Message string
}

func (e *RequestError) Error() string { return e.Code + ": " + e.Message }

func badRequest(code protocol.Code, msg string) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Code: string(code), Message: msg}
}

// ParseRequest reads a stream request's channels and last event id.
// maxChannels (when below MaxChannels, and above 0) lowers the channel
// bound, as --max-subscriptions does.
func ParseRequest(r *http.Request, maxChannels int) (Request, *RequestError) {
	if maxChannels <= 0 || maxChannels > MaxChannels {
		maxChannels = MaxChannels
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return Request{}, badRequest(protocol.CodeBadRequest, "malformed query string")
	}
	var req Request
	for _, v := range q["channel"] {
		for ch := range strings.SplitSeq(v, ",") {
			if !protocol.ValidChannel(ch) {
				return Request{}, badRequest(protocol.CodeInvalidChannel, "invalid channel name "+strconv.Quote(clip(ch)))
			}
			if slices.Contains(req.Channels, ch) {
				continue
			}
			if len(req.Channels) == maxChannels {
				return Request{}, badRequest(protocol.CodeTooManySubs, "a stream may name at most "+strconv.Itoa(maxChannels)+" channels")
			}
			req.Channels = append(req.Channels, ch)
		}
	}
	if len(req.Channels) == 0 {
		return Request{}, badRequest(protocol.CodeChannelRequired, "name at least one channel: ?channel=NAME")
	}
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = q.Get("lastEventId")
	}
	if id != "" {
		req.Resume = true
		req.Claims, err = ParseID(id)
		req.BadID = err != nil
	}
	return req, nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

package protocol

import (
	"errors"
	"strconv"
)

// Code is a stable, documented error code carried in error frames and in
// HTTP API error bodies. Codes never change meaning once published; see
// docs/protocol.md.
type Code string

// Error codes sent in {"type":"error","code":...} frames.
const (
	CodeBadJSON            Code = "bad_json"         // frame is not a JSON object
	CodeUnknownType        Code = "unknown_type"     // "type" missing or not a known command
	CodeChannelRequired    Code = "channel_required" // command needs "channel"
	CodeInvalidChannel     Code = "invalid_channel"  // channel name breaks the naming rules
	CodeForbidden          Code = "forbidden"        // identity may not do this on this channel
	CodeNotSubscribed      Code = "not_subscribed"   // unsubscribe from a channel not subscribed
	CodeTooManySubs        Code = "too_many_subscriptions"
	CodeBinaryNotSupported Code = "binary_not_supported" // binary frames carry no herald command
	CodeRateLimited        Code = "rate_limited"         // command dropped by the per-connection limiter
	CodeBadRequest         Code = "bad_request"          // a field has the wrong shape
	CodeUnauthorized       Code = "unauthorized"         // missing, invalid or expired credentials
	CodeNotFound           Code = "not_found"
	CodeUnavailable        Code = "unavailable"      // the broker (Redis) cannot be reached: nothing was done; retry
	CodeOverBudget         Code = "over_budget"      // the reply would pass the user's or the server's memory budget: read what is queued, then retry
	CodeIdempotencyFull    Code = "idempotency_full" // the server cannot remember one more idempotency key for its window: nothing published; retry later
	CodeInternal           Code = "internal"
)

// Error is an error with a stable protocol code. Packages return *Error (or
// wrap one) when the failure must reach a client with a specific code;
// CodeOf maps any error to the code sent on the wire.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf is shorthand for &Error{Code: code, Message: msg}.
func NewError(code Code, msg string) *Error { return &Error{Code: code, Message: msg} }

// CodeOf returns the protocol code carried by err, or CodeInternal.
func CodeOf(err error) Code {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return CodeInternal
}

// WebSocket close codes. 1000–1015 are RFC 6455; 4000–4999 are herald's own.
const (
	CloseNormal         = 1000
	CloseGoingAway      = 1001 // server shutting down
	CloseProtocolError  = 1002 // WebSocket protocol violation
	CloseInvalidPayload = 1007 // invalid UTF-8 in a text frame
	CloseMessageTooBig  = 1009 // frame larger than --max-message-bytes
	CloseDisconnected   = 4000 // disconnected through the server API
	CloseUnauthorized   = 4001 // token expired or revoked on a live connection
	CloseNoPong         = 4002 // nothing heard for --pong-timeout
	CloseForbidden      = 4003
	CloseSlowConsumer   = 4008 // send queue exceeded --client-queue-bytes
	CloseOverBudget     = 4009 // the user's (--max-user-queued-bytes) or the server's (--max-queued-bytes) memory budget is full
	CloseResubscribe    = 4010 // publications between nodes were lost (Redis interrupted): reconnect and subscribe with since
	CloseRateLimited    = 4029 // sustained command flood
)

// CloseLabel is code as herald_disconnects_total's label: RFC 6455's codes
// and herald's own by number; any other code in 3000–4999, which a client
// chose for its own reasons (herald echoes it in its reply, as RFC 6455
// §5.5.1 suggests), as "application", so that clients cannot grow the
// metric by a series per code; anything else (which herald refuses in a
// close frame) as "invalid".
func CloseLabel(code int) string {
	switch code {
	case CloseDisconnected, CloseUnauthorized, CloseNoPong, CloseForbidden, CloseSlowConsumer, CloseOverBudget, CloseResubscribe, CloseRateLimited:
		return strconv.Itoa(code)
	}
	switch {
	case code >= 1000 && code <= 1015:
		return strconv.Itoa(code)
	case code >= 3000 && code <= 4999:
		return "application"
	}
	return "invalid"
}

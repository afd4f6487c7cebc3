package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport/socketio"
)

// Bounds of POST /api/emit's wait for acks.
const (
	defaultEmitTimeout = 5 * time.Second
	maxEmitTimeout     = 30 * time.Second // well inside httpWriteTimeout
)

// emitter is a transport whose clients answer the server's emits with an
// ack (Socket.IO).
type emitter interface {
	EmitWithAck(ctx context.Context, user, event string, data json.RawMessage, timeout time.Duration) ([]socketio.SocketAck, error)
}

type emitRequest struct {
	UserID    string          `json:"userId"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	TimeoutMs *int64          `json:"timeoutMs"`
}

// emitResponse sorts each socket's outcome: acks (with the ack's
// arguments), timedOut, and failed (with the reason).
type emitResponse struct {
	OK       bool                 `json:"ok"`
	Sockets  int                  `json:"sockets"`
	Acks     []socketio.SocketAck `json:"acks"`
	TimedOut []socketio.SocketAck `json:"timedOut"`
	Failed   []socketio.SocketAck `json:"failed"`
}

// apiEmit is POST /api/emit: a Socket.IO emit with an ack to every socket
// of a user on this node, answered with the acks once all came or the
// timeout passed (see docs/api.md).
func (s *Server) apiEmit(r *http.Request) (any, error) {
	var req emitRequest
	if err := decodeBody(r, s.bodyLimit(), &req); err != nil {
		return nil, err
	}
	if req.UserID == "" {
		return nil, badRequest(protocol.CodeBadRequest, `"userId" is required`)
	}
	if !socketio.ValidEmitEvent(req.Event) {
		return nil, badRequest(protocol.CodeBadRequest, `"event" must be 1 to 256 bytes and not one socket.io-client or herald reserves (connect, connect_error, disconnect, disconnecting, newListener, removeListener, herald:error, herald:rooms)`)
	}
	if int64(len(req.Data)) > s.cfg.MaxMessageBytes {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", msg: "data larger than max-message-bytes"}
	}
	timeout := defaultEmitTimeout
	if req.TimeoutMs != nil {
		timeout = time.Duration(*req.TimeoutMs) * time.Millisecond
		if timeout < time.Millisecond || timeout > maxEmitTimeout {
			return nil, badRequest(protocol.CodeBadRequest, `"timeoutMs" must be 1 to 30000`)
		}
	}
	var em emitter
	for _, t := range s.mounted {
		if e, ok := t.(emitter); ok {
			em = e
		}
	}
	if em == nil {
		return nil, errSocketIOOff
	}
	res, err := em.EmitWithAck(r.Context(), req.UserID, req.Event, req.Data, timeout)
	if errors.Is(err, socketio.ErrSocketIOOff) {
		return nil, errSocketIOOff
	}
	if err != nil {
		return nil, err
	}
	out := emitResponse{OK: true, Sockets: len(res), Acks: []socketio.SocketAck{}, TimedOut: []socketio.SocketAck{}, Failed: []socketio.SocketAck{}}
	for _, a := range res {
		switch a.Code {
		case "":
			out.Acks = append(out.Acks, a)
		case socketio.AckTimeout:
			a.Code = ""
			out.TimedOut = append(out.TimedOut, a)
		default:
			out.Failed = append(out.Failed, a)
		}
	}
	return out, nil
}

var errSocketIOOff = &apiError{status: http.StatusNotFound, code: string(protocol.CodeNotFound), msg: "socket.io is not served (--socketio-path is empty)"}

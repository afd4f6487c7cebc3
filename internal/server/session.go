package server

import (
	"encoding/json"
	"errors"
	"time"

	"golang.org/x/time/rate"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
)

// session is the server side of one connection: identity, limits and command
// dispatch. Its methods run on the connection's read goroutine only.
type session struct {
	srv     *Server
	c       *hub.Client
	id      auth.Identity
	limiter *rate.Limiter // nil when rate limiting is off
	strikes int           // consecutive rate-limited commands
}

// handle runs one client command.
func (s *session) handle(data []byte) {
	if s.c.Closing() {
		return
	}
	if s.limiter != nil && !s.limiter.Allow() {
		s.strikes++
		s.srv.metrics.RateLimited.Inc()
		if s.strikes >= s.srv.cfg.RateLimitStrikes {
			s.srv.log.Warn("rate limit exceeded repeatedly, closing", "client", s.c.ID, "user", s.id.UserID, "strikes", s.strikes)
			s.c.Close(protocol.CloseRateLimited, "rate limited")
			return
		}
		if s.strikes == 1 {
			s.srv.log.Info("client rate limited", "client", s.c.ID, "user", s.id.UserID)
		}
		s.sendError(protocol.CodeRateLimited, "too many commands; slow down", "", nil)
		return
	}
	s.strikes = 0

	cmd, err := protocol.DecodeCommand(data)
	if err != nil {
		s.fail(err, "", cmd.ID)
		return
	}
	switch cmd.Type {
	case protocol.TypeSubscribe:
		s.subscribe(&cmd)
	case protocol.TypeUnsubscribe:
		s.unsubscribe(&cmd)
	case protocol.TypeMessage:
		s.publish(&cmd)
	case protocol.TypePing:
		s.c.Send(hub.Seal(protocol.AppendPong(hub.NewFrameBuffer(64), time.Now(), cmd.ID)))
	case protocol.TypePong:
		// An application-level answer to nothing in particular: accepted.
	case "":
		s.sendError(protocol.CodeUnknownType, `missing "type"`, "", cmd.ID)
	default:
		s.sendError(protocol.CodeUnknownType, "unknown type; expected subscribe, unsubscribe, message or ping", "", cmd.ID)
	}
}

// checkChannel validates the channel field and asks the policy about op.
func (s *session) checkChannel(cmd *protocol.Command, op auth.Op) bool {
	if cmd.Channel == "" {
		s.sendError(protocol.CodeChannelRequired, `"channel" is required`, "", cmd.ID)
		return false
	}
	if err := s.srv.policy.Authorize(s.id, op, cmd.Channel); err != nil {
		s.fail(err, cmd.Channel, cmd.ID)
		return false
	}
	return true
}

func (s *session) subscribe(cmd *protocol.Command) {
	if !s.checkChannel(cmd, auth.OpSubscribe) {
		return
	}
	if _, err := s.srv.hub.Subscribe(s.c, cmd.Channel); err != nil {
		if errors.Is(err, hub.ErrClientClosing) {
			return
		}
		s.fail(err, cmd.Channel, cmd.ID)
		return
	}
	s.ack(protocol.TypeSubscribed, cmd)
}

func (s *session) unsubscribe(cmd *protocol.Command) {
	if cmd.Channel == "" {
		s.sendError(protocol.CodeChannelRequired, `"channel" is required`, "", cmd.ID)
		return
	}
	if !protocol.ValidChannel(cmd.Channel) {
		s.sendError(protocol.CodeInvalidChannel, "invalid channel name", "", cmd.ID)
		return
	}
	// Unsubscribing from a channel one is not in is acknowledged: the outcome
	// the client asked for holds.
	s.srv.hub.Unsubscribe(s.c, cmd.Channel)
	s.ack(protocol.TypeUnsubscribed, cmd)
}

func (s *session) publish(cmd *protocol.Command) {
	if !s.checkChannel(cmd, auth.OpPublish) {
		return
	}
	ns := s.srv.policy.Namespace(cmd.Channel)
	frame := hub.Seal(protocol.AppendMessage(hub.NewFrameBuffer(96+len(cmd.Channel)+len(cmd.Data)+len(s.id.UserID)), &protocol.Message{
		Channel: cmd.Channel,
		Data:    cmd.Data,
		Time:    time.Now(),
		From:    s.id.UserID,
	}))
	exclude := s.c
	if ns.Echo {
		exclude = nil
	}
	s.srv.hub.Publish(cmd.Channel, frame, exclude)
	s.srv.metrics.Publications.WithLabelValues("client").Inc()
	if len(cmd.ID) > 0 {
		s.ack(protocol.TypePublished, cmd)
	}
}

func (s *session) ack(typ string, cmd *protocol.Command) {
	s.c.Send(hub.Seal(protocol.AppendAck(hub.NewFrameBuffer(48+len(cmd.Channel)+len(cmd.ID)), typ, cmd.Channel, cmd.ID)))
}

// fail reports err to the client with its protocol code.
func (s *session) fail(err error, channel string, id json.RawMessage) {
	code := protocol.CodeOf(err)
	msg := "internal error"
	if pe := (*protocol.Error)(nil); errors.As(err, &pe) {
		msg = pe.Message
	} else if code == protocol.CodeInternal {
		s.srv.log.Error("command failed", "client", s.c.ID, "err", err)
	}
	s.sendError(code, msg, channel, id)
}

func (s *session) sendError(code protocol.Code, msg, channel string, id json.RawMessage) {
	s.srv.metrics.ClientErrors.WithLabelValues(string(code)).Inc()
	s.srv.log.Debug("error frame", "client", s.c.ID, "user", s.id.UserID, "code", code, "channel", channel)
	s.c.Send(hub.Seal(protocol.AppendError(hub.NewFrameBuffer(96+len(msg)+len(channel)+len(id)), code, msg, channel, id)))
}

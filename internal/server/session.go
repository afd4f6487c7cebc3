package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport"
)

// session is the server side of one connection, whatever transport
// carries it: identity, limits and the commands (transport.Session). Its
// commands run one at a time, on the goroutine its transport reads on; its
// answers go to the transport.Out each command is given.
type session struct {
	srv     *Server
	c       *hub.Client
	id      auth.Identity
	limiter *rate.Limiter // nil when rate limiting is off
	strikes int           // consecutive rate-limited commands
}

var _ transport.Session = (*session)(nil)

// newSession makes the session of a connection admitted with id, and its
// hub client on nc (see transport.Host.NewSession).
func (s *Server) newSession(id auth.Identity, nc net.Conn, o hub.ClientOptions) *session {
	sess := &session{srv: s, id: id}
	o.ID, o.UserID, o.OrgID, o.ExpiresAt = newClientID(), id.UserID, id.OrgID, id.ExpiresAt
	o.Budget = s.budget.User(id.UserID) // kept open until the client is gone
	if gone := o.OnGone; gone != nil {
		o.OnGone = func() { gone(); o.Budget.Close() }
	} else {
		o.OnGone = o.Budget.Close
	}
	sess.c = s.hub.NewClient(nc, o)
	if s.cfg.RateLimit > 0 {
		sess.limiter = rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst)
	}
	return sess
}

// Client implements transport.Session.
func (s *session) Client() *hub.Client { return s.c }

// Identity implements transport.Session.
func (s *session) Identity() auth.Identity { return s.id }

// Admit implements transport.Session.
func (s *session) Admit(out transport.Out) bool { return s.admit("", out) }

// Error implements transport.Session.
func (s *session) Error(out transport.Out, code protocol.Code, msg string) {
	s.sendError(out, code, msg, "", nil)
}

// Handle implements transport.Session: one command in the native JSON.
func (s *session) Handle(data []byte, out transport.Out) {
	if !s.admit("", out) { // before decoding: a flood costs no decode
		return
	}
	cmd, err := protocol.DecodeCommand(data)
	if err == nil {
		err = cmd.Validate()
	}
	if err != nil {
		s.fail(out, err, cmd.Channel, cmd.ID)
		return
	}
	s.run(&cmd, out)
}

// Run implements transport.Session: a command the transport decoded.
func (s *session) Run(cmd *protocol.Command, out transport.Out) {
	if !s.admit(cmd.Channel, out) {
		return
	}
	if err := cmd.Validate(); err != nil {
		s.fail(out, err, cmd.Channel, cmd.ID)
		return
	}
	s.run(cmd, out)
}

// subscribeAll subscribes the connection to channels, as if it had sent a
// subscribe command (without id) for each: the channels named in its
// upgrade request's subscribe parameter. They count against
// --max-subscriptions only, not the rate limit: they are one request, not
// a flood of commands. Past --max-subscriptions names the rest are
// answered with one error, not one each.
func (s *session) subscribeAll(channels []string, out transport.Out) {
	if limit := s.srv.cfg.MaxSubscriptions; limit > 0 && len(channels) > limit {
		s.sendError(out, protocol.CodeTooManySubs, "the subscribe parameter names "+strconv.Itoa(len(channels))+
			" channels; a connection may hold "+strconv.Itoa(limit)+": the first ones were subscribed", "", nil)
		channels = channels[:limit]
	}
	for _, ch := range channels {
		if s.c.Closing() {
			return
		}
		cmd := protocol.Command{Type: protocol.TypeSubscribe, Channel: ch}
		if err := cmd.Validate(); err != nil {
			s.fail(out, err, ch, nil)
			continue
		}
		s.subscribe(&cmd, out)
	}
}

// admit applies the rate limit to one command: it reports whether the
// command may run, answers it with an error (naming channel, when known)
// when not, and closes a client that keeps going past the limit.
func (s *session) admit(channel string, out transport.Out) bool {
	if s.c.Closing() {
		return false
	}
	if s.limiter != nil && !s.limiter.Allow() {
		s.strikes++
		s.srv.metrics.RateLimited.Inc()
		if s.strikes >= s.srv.cfg.RateLimitStrikes {
			s.srv.sparse.Warn("rate limit exceeded repeatedly, closing", "client", s.c.ID, "user", s.id.UserID, "strikes", s.strikes)
			s.c.Close(protocol.CloseRateLimited, "rate limited")
			return false
		}
		if s.strikes == 1 {
			s.srv.sparse.Info("client rate limited", "client", s.c.ID, "user", s.id.UserID)
		}
		s.sendError(out, protocol.CodeRateLimited, "too many commands; slow down", channel, nil)
		return false
	}
	s.strikes = 0
	return true
}

// run runs a decoded and validated command.
func (s *session) run(cmd *protocol.Command, out transport.Out) {
	switch cmd.Type {
	case protocol.TypeSubscribe:
		s.subscribe(cmd, out)
	case protocol.TypeUnsubscribe:
		s.unsubscribe(cmd, out)
	case protocol.TypeMessage:
		s.publish(cmd, out)
	case protocol.TypeHistory:
		s.history(cmd, out)
	case protocol.TypePresence:
		s.presence(cmd, out)
	case protocol.TypePing:
		out.Reply(protocol.AppendPong(out.Buffer(64), time.Now(), cmd.ID))
	case protocol.TypePong:
		// An application-level answer to nothing in particular: accepted.
	case "":
		s.sendError(out, protocol.CodeUnknownType, `missing "type"`, "", cmd.ID)
	default:
		s.sendError(out, protocol.CodeUnknownType, protocol.UnknownTypeMessage, "", cmd.ID)
	}
}

// checkChannel validates the channel field and asks the policy about op.
func (s *session) checkChannel(cmd *protocol.Command, op auth.Op, out transport.Out) bool {
	if cmd.Channel == "" {
		s.sendError(out, protocol.CodeChannelRequired, `"channel" is required`, "", cmd.ID)
		return false
	}
	if err := s.srv.policy.Authorize(s.id, op, cmd.Channel); err != nil {
		s.fail(out, err, cmd.Channel, cmd.ID)
		return false
	}
	return true
}

// toSince converts a client's since into a broker position; cmd was validated.
func toSince(in *protocol.Since) *broker.Since {
	if in == nil {
		return nil
	}
	if in.Time != "" {
		t, _ := time.Parse(time.RFC3339Nano, in.Time)
		return &broker.Since{Time: t}
	}
	return &broker.Since{Offset: *in.Offset, Epoch: in.Epoch}
}

// subscribe joins the channel's live stream — after replaying what the
// client missed when it gives "since" — atomically with respect to
// publications, so nothing is lost or repeated between replay and live.
func (s *session) subscribe(cmd *protocol.Command, out transport.Out) {
	if !s.checkChannel(cmd, auth.OpSubscribe, out) {
		return
	}
	if cmd.Since != nil {
		if err := s.srv.policy.Authorize(s.id, auth.OpHistory, cmd.Channel); err != nil {
			s.fail(out, err, cmd.Channel, cmd.ID)
			return
		}
	}
	var already bool
	ns := s.srv.policy.Namespace(cmd.Channel)
	opts := broker.SubscribeOptions{Since: toSince(cmd.Since), History: historyOptions(ns)}
	err := s.srv.broker.Subscribe(context.Background(), cmd.Channel, opts, func(r broker.Recovery) error {
		var err error
		already, err = s.srv.hub.Subscribe(s.c, cmd.Channel, cmd.Events)
		if err != nil {
			return err
		}
		// The replay is bounded by history; it may exceed the live queue bound
		// (it is sent as one burst) but not maxReplayBytes, counting earlier
		// replays still queued (a client that subscribes with since again
		// and again without reading would otherwise queue one more burst
		// each time): past that the oldest part is left out and the client
		// told recovered:false.
		budget := s.burstBudget()
		replay := make([]*hub.Message, 0, len(r.Publications))
		total := 0
		for i := len(r.Publications) - 1; i >= 0; i-- {
			p := &r.Publications[i]
			if !hub.WantsEvent(cmd.Events, p.Event) {
				continue
			}
			m := s.srv.hub.Publication(message(cmd.Channel, p))
			size := len(s.c.Bytes(m))
			if total+size > budget {
				r.Recovered = false
				s.srv.sparse.Info("memory budget reached: replay refused, subscribed without it", "client", s.c.ID, "user", s.id.UserID)
				break
			}
			total += size
			replay = append(replay, m)
		}
		slices.Reverse(replay)
		var recovered *bool
		if cmd.Since != nil {
			recovered = &r.Recovered
		}
		pos := protocol.Position{Offset: r.Position.Offset, Epoch: r.Position.Epoch}
		doc := protocol.AppendSubscribed(out.Buffer(96+len(cmd.Channel)+len(cmd.ID)), cmd.Channel, pos, recovered, cmd.ID)
		if !out.Subscribed(doc, transport.Subscription{Channel: cmd.Channel, Position: pos, Recovered: recovered}, replay) && len(replay) > 0 && !s.c.Closing() {
			// The memory budget refused the replay: subscribed without it,
			// and told so (recovered: false).
			r.Recovered = false
			s.srv.sparse.Info("memory budget reached: replay refused, subscribed without it", "client", s.c.ID, "user", s.id.UserID)
			doc = protocol.AppendSubscribed(out.Buffer(96+len(cmd.Channel)+len(cmd.ID)), cmd.Channel, pos, recovered, cmd.ID)
			if !out.Subscribed(doc, transport.Subscription{Channel: cmd.Channel, Position: pos, Recovered: recovered}, nil) && !s.c.Closing() {
				s.srv.sparse.Warn("memory budget reached: subscribe reply refused, closing", "client", s.c.ID, "user", s.id.UserID)
				s.c.Close(protocol.CloseOverBudget, "memory budget reached")
			}
		}
		if cmd.Since != nil {
			s.srv.metrics.Recoveries.WithLabelValues(strconv.FormatBool(r.Recovered)).Inc()
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, hub.ErrClientClosing) {
			return
		}
		s.fail(out, err, cmd.Channel, cmd.ID)
		return
	}
	if !already {
		s.srv.announce(protocol.TypeJoin, cmd.Channel, s.c)
	}
}

func (s *session) unsubscribe(cmd *protocol.Command, out transport.Out) {
	if cmd.Channel == "" {
		s.sendError(out, protocol.CodeChannelRequired, `"channel" is required`, "", cmd.ID)
		return
	}
	if !protocol.ValidChannel(cmd.Channel) {
		s.sendError(out, protocol.CodeInvalidChannel, "invalid channel name", cmd.Channel, cmd.ID)
		return
	}
	// Unsubscribing from a channel one is not in is acknowledged: the outcome
	// the client asked for holds.
	if s.srv.hub.Unsubscribe(s.c, cmd.Channel) {
		s.srv.announce(protocol.TypeLeave, cmd.Channel, s.c)
	}
	s.ack(protocol.TypeUnsubscribed, cmd, out)
}

func (s *session) publish(cmd *protocol.Command, out transport.Out) {
	if !s.checkChannel(cmd, auth.OpPublish, out) {
		return
	}
	ns := s.srv.policy.Namespace(cmd.Channel)
	origin := s.c.ID
	if ns.Echo {
		origin = ""
	}
	res, err := s.srv.broker.Publish(context.Background(), cmd.Channel, broker.Publication{
		Data: cmd.Data, Event: cmd.Event, From: s.id.UserID, Origin: origin,
	}, s.srv.publishOptions(ns, cmd.IdempotencyKey))
	if err != nil {
		s.fail(out, err, cmd.Channel, cmd.ID)
		return
	}
	s.srv.metrics.Publications.WithLabelValues("client").Inc()
	if len(cmd.ID) > 0 {
		pos := protocol.Position{Offset: res.Offset, Epoch: res.Epoch}
		out.Reply(protocol.AppendPublished(out.Buffer(96+len(cmd.Channel)+len(cmd.ID)), cmd.Channel, pos, res.Duplicate, cmd.ID))
	}
}

// history answers with retained publications: after since, or the newest.
func (s *session) history(cmd *protocol.Command, out transport.Out) {
	if !s.checkChannel(cmd, auth.OpHistory, out) {
		return
	}
	limit := cmd.Limit
	if limit == 0 || limit > protocol.MaxHistoryLimit {
		limit = protocol.MaxHistoryLimit
	}
	pubs, pos, err := s.srv.broker.History(context.Background(), cmd.Channel, broker.HistoryQuery{Since: toSince(cmd.Since), Limit: limit})
	if err != nil {
		s.fail(out, err, cmd.Channel, cmd.ID)
		return
	}
	// One reply is bounded like a replay, and sent as a burst like one: a
	// channel of large messages gets a part of them and "truncated", not a
	// reply the size of its history (which the queue bound would have
	// answered by closing the client, 4008).
	pubs, truncated := fitHistory(pubs, s.burstBudget(), cmd.Since == nil)
	msgs := make([]protocol.Message, len(pubs))
	size := 128 + len(cmd.Channel) + len(cmd.ID)
	for i := range pubs {
		msgs[i] = message(cmd.Channel, &pubs[i])
		size += historyEntryBytes(&pubs[i])
	}
	if !out.Burst(protocol.AppendHistory(out.Buffer(size), cmd.Channel,
		protocol.Position{Offset: pos.Offset, Epoch: pos.Epoch}, msgs, truncated, cmd.ID)) {
		s.overBudget(out, cmd)
	}
}

// overBudget answers a command whose reply the memory budget refused (the
// client being open): an over_budget error.
func (s *session) overBudget(out transport.Out, cmd *protocol.Command) {
	if !s.c.Closing() {
		s.srv.sparse.Info("memory budget reached: reply refused", "client", s.c.ID, "user", s.id.UserID, "op", cmd.Type)
		s.sendError(out, protocol.CodeOverBudget, "the reply does not fit in this user's or the server's memory budget: read what is queued, then ask again", cmd.Channel, cmd.ID)
	}
}

// presence lists the connections on a channel.
func (s *session) presence(cmd *protocol.Command, out transport.Out) {
	if !s.checkChannel(cmd, auth.OpPresence, out) {
		return
	}
	p := s.srv.presence(cmd.Channel)
	p.Type, p.ID = protocol.TypePresence, cmd.ID
	// A big room's list passes the queue bound (about 10,000 clients fill
	// 1 MiB), which would close the asker as a slow consumer: it goes out
	// as a burst, like a history reply, and within the same bound.
	p.Clients, p.Truncated = fitPresence(p.Clients, s.burstBudget())
	b, err := json.Marshal(p)
	if err != nil {
		s.fail(out, err, cmd.Channel, cmd.ID)
		return
	}
	if !out.Burst(append(out.Buffer(len(b)), b...)) {
		s.overBudget(out, cmd)
	}
}

// burstBudget is how many bytes one more burst to this client may carry: a
// replay, a history reply or a presence list may pass the queue bound, but
// all of them still queued together stay within maxReplayBytes. It may be
// negative.
func (s *session) burstBudget() int { return s.srv.maxReplayBytes() - s.c.QueuedBurst() }

func (s *session) ack(typ string, cmd *protocol.Command, out transport.Out) {
	out.Reply(protocol.AppendAck(out.Buffer(48+len(cmd.Channel)+len(cmd.ID)), typ, cmd.Channel, cmd.ID))
}

// fail reports err to the client with its protocol code.
func (s *session) fail(out transport.Out, err error, channel string, id json.RawMessage) {
	code := protocol.CodeOf(err)
	msg := "internal error"
	if pe := (*protocol.Error)(nil); errors.As(err, &pe) {
		msg = pe.Message
	} else if code == protocol.CodeInternal {
		s.srv.sparse.Error("command failed", "client", s.c.ID, "err", err)
	}
	s.sendError(out, code, msg, channel, id)
}

func (s *session) sendError(out transport.Out, code protocol.Code, msg, channel string, id json.RawMessage) {
	s.srv.metrics.ClientErrors.WithLabelValues(string(code)).Inc()
	s.srv.log.Debug("error frame", "client", s.c.ID, "user", s.id.UserID, "code", code, "channel", channel)
	out.Reply(protocol.AppendError(out.Buffer(96+len(msg)+len(channel)+len(id)), code, msg, channel, id))
}

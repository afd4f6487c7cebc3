package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/broker/memory"
	redisbroker "github.com/herald-rt/herald/internal/broker/redis"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/protocol"
)

// setupBroker makes the broker --broker names: the in-memory one, or the
// Redis one shared by every node on the same Redis and prefix. Whatever it
// can do beyond broker.Broker is found by type assertion where it is used.
func (s *Server) setupBroker() error {
	var b broker.Broker
	switch s.cfg.Broker {
	case "redis":
		opts, err := redis.ParseURL(s.cfg.RedisURL)
		if err != nil { // config.Validate says why; this error must not quote the password
			return fmt.Errorf("invalid redis-url %s", config.RedactURL(s.cfg.RedisURL))
		}
		b = redisbroker.New(redisbroker.Options{
			Redis:    opts,
			Prefix:   s.cfg.RedisPrefix,
			Deliver:  s.deliver,
			OnGap:    s.brokerGap,
			OnLive:   s.brokerLive,
			OnNotify: s.onNote,
			Log:      s.log.With("broker", "redis"),
		})
	default:
		mb := memory.New(memory.Options{Deliver: s.deliver, MaxBytes: s.cfg.HistoryMaxBytes, OnDrop: s.historyDropped,
			MaxKeyBytes: s.budget.Limit() / 4, KeyBudget: s.budget})
		s.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_idempotency_key_bytes",
			Help: "Bytes idempotency keys take (memory broker), counted in --max-queued-bytes and bounded to a quarter of it.",
		}, func() float64 { return float64(mb.KeyBytes()) }))
		b = mb
	}
	if m, ok := b.(broker.HistoryMeter); ok {
		s.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_history_bytes",
			Help: "Bytes of history all channels keep, as counted against --history-max-bytes (memory broker).",
		}, func() float64 { return float64(m.HistoryBytes()) }))
	}
	if _, ok := b.(broker.Liveness); !ok {
		s.metrics.BrokerUp.Set(1) // always live
	}
	s.broker = guardedBroker{b: b, s: s}
	return nil
}

// runBroker runs the broker's background work until ctx is done.
func (s *Server) runBroker(ctx context.Context) {
	s.broker.b.Run(ctx, brokerSweep, brokerIdle, s.hub.HasSubscribers)
}

// brokerUp reports whether the broker can be used now.
func (s *Server) brokerUp() bool {
	l, ok := s.broker.b.(broker.Liveness)
	return !ok || l.Live()
}

func (s *Server) brokerLive(live bool) {
	if live {
		s.metrics.BrokerUp.Set(1)
	} else {
		s.metrics.BrokerUp.Set(0)
	}
}

// brokerGap closes the local subscribers of a channel that lost
// publications between nodes: they reconnect and subscribe with since, and
// recovery tells them what history still holds.
func (s *Server) brokerGap(channel string) {
	if n := s.hub.CloseChannel(channel, protocol.CloseResubscribe, "publications lost between nodes; subscribe again with since"); n > 0 {
		s.metrics.BrokerGaps.Inc()
		s.sparse.Note("broker gap", 1, func(count int64) {
			s.log.Warn("publications lost between nodes: subscribers closed with 4010 to recover", "channel", channel, "channels", count, "clients", n)
		})
	}
}

// guardedBroker is the server's broker: a broker.ErrUnavailable becomes an
// unavailableError, counted and logged sparingly.
type guardedBroker struct {
	b broker.Broker
	s *Server
}

func (g guardedBroker) Publish(ctx context.Context, channel string, p broker.Publication, o broker.PublishOptions) (broker.PublishResult, error) {
	r, err := g.b.Publish(ctx, channel, p, o)
	return r, g.s.idempotencyErr(g.s.brokerErr("publish", err))
}

func (g guardedBroker) Subscribe(ctx context.Context, channel string, o broker.SubscribeOptions, join func(broker.Recovery) error) error {
	return g.s.brokerErr("subscribe", g.b.Subscribe(ctx, channel, o, join))
}

func (g guardedBroker) History(ctx context.Context, channel string, q broker.HistoryQuery) ([]broker.Publication, broker.Position, error) {
	p, pos, err := g.b.History(ctx, channel, q)
	return p, pos, g.s.brokerErr("history", err)
}

func (s *Server) brokerErr(op string, err error) error {
	if err == nil || !errors.Is(err, broker.ErrUnavailable) {
		return err
	}
	s.metrics.BrokerUnavailable.WithLabelValues(op).Inc()
	s.sparse.Note("broker unavailable", 1, func(count int64) {
		s.log.Warn("broker unavailable: operations refused", "op", op, "err", err, "refused", count)
	})
	return unavailableError{err: err, op: op}
}

// unavailableError is a broker that cannot be reached, as its callers
// answer it: an error frame with code "unavailable" to a client, HTTP 503 to
// an API caller.
type unavailableError struct {
	err error
	op  string // publish, subscribe, history, notify
}

func (e unavailableError) Error() string { return e.err.Error() }
func (e unavailableError) Unwrap() error { return e.err }

// message says whether anything may have been done.
func (e unavailableError) message() string {
	if errors.Is(e.err, broker.ErrOutcomeUnknown) {
		if e.op == "publish" {
			return "broker did not answer in time: the publication may have been made; retry with an idempotencyKey to publish at most once"
		}
		return "broker did not answer in time: it may have been done"
	}
	return "broker unavailable; nothing was done, retry"
}

// As lets errors.As find the answer either caller looks for.
func (e unavailableError) As(target any) bool {
	return answerAs(target, http.StatusServiceUnavailable, protocol.CodeUnavailable, e.message())
}

// answerAs sets target, when it is a *protocol.Error or an *apiError, to
// the answer a client (code, msg) or an API caller (status too) gets, for
// an error type's As method.
func answerAs(target any, status int, code protocol.Code, msg string) bool {
	switch t := target.(type) {
	case **protocol.Error:
		*t = protocol.NewError(code, msg)
		return true
	case **apiError:
		*t = &apiError{status: status, code: string(code), msg: msg}
		return true
	}
	return false
}

// What one node tells the others (through the Redis broker's Notify), so
// that the server API reaches a user or a client wherever it is connected.
const (
	noteSend       = 'u' // a message to every connection of User
	noteDisconnect = 'd' // close every connection of User, or Client
)

// nodeNote is a notification's payload.
type nodeNote struct {
	User    string          `json:"u,omitempty"`
	Client  string          `json:"c,omitempty"`
	Channel string          `json:"ch,omitempty"`
	Data    json.RawMessage `json:"d,omitempty"`
	Time    int64           `json:"t,omitempty"` // µs since the epoch
}

// tellNodes sends n to the other nodes; a broker that is no Notifier has
// none.
func (s *Server) tellNodes(ctx context.Context, kind byte, n nodeNote) error {
	nb, ok := s.broker.b.(broker.Notifier)
	if !ok {
		return nil
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	return s.brokerErr("notify", nb.Notify(ctx, kind, string(b)))
}

// onNote carries out another node's notification on this node's
// connections.
func (s *Server) onNote(kind byte, payload string) {
	var n nodeNote
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		s.log.Warn("malformed notification from another node ignored", "err", err)
		return
	}
	switch kind {
	case noteSend:
		m := protocol.Message{Channel: n.Channel, Data: n.Data, Time: time.UnixMicro(n.Time)}
		s.hub.SendToUser(n.User, s.hub.Publication(m))
	case noteDisconnect:
		s.disconnectLocal(n.User, n.Client)
	}
}

// disconnectLocal closes this node's connections of user, or the client
// with id, and returns how many.
func (s *Server) disconnectLocal(user, client string) int {
	if user != "" {
		return s.hub.DisconnectUser(user, protocol.CloseDisconnected, "disconnected by server")
	}
	c := s.hub.Client(client)
	if c == nil {
		return 0
	}
	c.Close(protocol.CloseDisconnected, "disconnected by server")
	return 1
}

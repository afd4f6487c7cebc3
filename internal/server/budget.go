package server

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/budget"
	"github.com/herald-rt/herald/internal/protocol"
)

// setupBudget makes the memory budget of --max-queued-bytes and
// --max-user-queued-bytes (derived from the machine's memory when 0) and
// registers its metrics.
func (s *Server) setupBudget() {
	limit := s.cfg.MaxQueuedBytes
	if limit == 0 {
		limit = budget.DefaultLimit(budget.MachineMemory())
	}
	user := s.cfg.MaxUserQueuedBytes
	if user == 0 {
		user = budget.DefaultUserLimit(limit)
	}
	s.budget = budget.New(limit, user)
	b := s.budget
	reg := s.metrics.Registry
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_queued_bytes",
			Help: "Bytes the process holds for clients (send queues, replies, messages being received, idempotency keys), as counted against --max-queued-bytes.",
		}, func() float64 { return float64(b.Used()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_queued_bytes_limit",
			Help: "--max-queued-bytes in force (derived from memory when configured 0).",
		}, func() float64 { return float64(b.Limit()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_user_queued_bytes_limit",
			Help: "--max-user-queued-bytes in force (derived from --max-queued-bytes when configured 0).",
		}, func() float64 { return float64(b.UserLimit()) }),
	)
	s.keysRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_idempotency_refusals_total",
		Help: "Keyed publishes refused (idempotency_full) because their key could not be remembered for its whole window.",
	})
	reg.MustRegister(s.keysRefused)
	for _, scope := range []budget.Scope{budget.User, budget.Process} {
		for _, kind := range []budget.Kind{budget.Queue, budget.Reply, budget.Read, budget.Keys} {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "herald_budget_refusals_total",
				Help:        "Reservations refused by a memory budget: budget is user (--max-user-queued-bytes) or process (--max-queued-bytes); kind is what was refused (queue: a frame to a connection, reply: a history/presence reply or replay, read: a message being received, idempotency: a keyed publish).",
				ConstLabels: prometheus.Labels{"budget": scope.String(), "kind": kind.String()},
			}, func() float64 { return float64(b.Refused(scope, kind)) }))
		}
	}
}

// idempotencyFullError is broker.ErrIdempotencyFull as its callers answer
// it: an error frame with code idempotency_full to a client, HTTP 503 to
// an API caller (the server's memory for keys is full, for every caller:
// not this caller's rate, which 429 would say). Nothing was published.
type idempotencyFullError struct{ err error }

const idempotencyFullMsg = "too many idempotency keys are remembered to remember this one for its whole window: nothing was published; retry later"

func (e idempotencyFullError) Error() string { return e.err.Error() }
func (e idempotencyFullError) Unwrap() error { return e.err }

// As lets errors.As find the answer either caller looks for.
func (e idempotencyFullError) As(target any) bool {
	return answerAs(target, http.StatusServiceUnavailable, protocol.CodeIdempotencyFull, idempotencyFullMsg)
}

// idempotencyErr turns broker.ErrIdempotencyFull into the error its callers
// answer, logging sparingly.
func (s *Server) idempotencyErr(err error) error {
	if err == nil || !errors.Is(err, broker.ErrIdempotencyFull) {
		return err
	}
	s.keysRefused.Inc()
	s.sparse.Note("refused: idempotency full", 1, func(count int64) {
		s.log.Warn("idempotency keys full: keyed publishes refused", "refused", count)
	})
	return idempotencyFullError{err: err}
}

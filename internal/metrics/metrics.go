// Package metrics defines herald's Prometheus collectors. A Metrics value is
// created per server with its own registry; nothing is registered globally.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every herald_* collector. All methods of the prometheus types
// are safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	Connections   prometheus.Gauge
	ConnectsTotal prometheus.Counter
	Subscriptions prometheus.Gauge
	Channels      prometheus.Gauge
	MessagesIn    prometheus.Counter // client frames received
	BytesIn       prometheus.Counter
	MessagesOut   prometheus.Counter // frames queued to clients
	BytesOut      prometheus.Counter // bytes written to sockets
	Publications  *prometheus.CounterVec
	SlowConsumers prometheus.Counter
	AuthFailures  *prometheus.CounterVec
	RateLimited   prometheus.Counter
	ClientErrors  *prometheus.CounterVec
	Disconnects   *prometheus.CounterVec
	APIRequests   *prometheus.CounterVec
	Recoveries    *prometheus.CounterVec
	AcceptErrors  prometheus.Counter
	// UringWorkers is how many writer-pool workers write with io_uring; the
	// others (all, where io_uring is unavailable or off) write with writev.
	UringWorkers prometheus.Gauge
	// HistoryDropped counts publications dropped from history, or not kept,
	// to stay within --history-max-bytes.
	HistoryDropped prometheus.Counter
	// ConnectionsRefused counts upgrades refused by a connection limit, by
	// reason: server_full (--max-connections), user_limit
	// (--max-user-connections).
	ConnectionsRefused *prometheus.CounterVec
	// BrokerUp is 1 while the broker can be used (always, for the memory
	// broker; while its pub/sub subscription is live, for Redis).
	BrokerUp prometheus.Gauge
	// BrokerUnavailable counts operations refused because the broker could
	// not be reached, by operation.
	BrokerUnavailable *prometheus.CounterVec
	// BrokerGaps counts channels whose local subscribers were closed (4010)
	// because publications between nodes were lost.
	BrokerGaps prometheus.Counter
}

// New creates the collectors and registers them, with the Go and process
// collectors, on a fresh registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry:      reg,
		Connections:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_connections", Help: "Open WebSocket connections."}),
		ConnectsTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_connects_total", Help: "WebSocket connections accepted."}),
		Subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_subscriptions", Help: "Active channel subscriptions."}),
		Channels:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_channels", Help: "Channels with at least one subscriber."}),
		MessagesIn:    prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_messages_in_total", Help: "Frames received from clients."}),
		BytesIn:       prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_bytes_in_total", Help: "Payload bytes received from clients."}),
		MessagesOut:   prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_messages_out_total", Help: "Frames written to client sockets."}),
		BytesOut:      prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_bytes_out_total", Help: "Bytes written to client sockets."}),
		Publications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_publications_total", Help: "Publications by source (client, api)."},
			[]string{"source"}),
		SlowConsumers: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_slow_consumer_closes_total", Help: "Connections closed because their send queue overflowed."}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_auth_failures_total", Help: "Rejected WebSocket or API credentials, by reason."},
			[]string{"reason"}),
		RateLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_rate_limited_total", Help: "Client commands refused by the rate limiter."}),
		ClientErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_client_errors_total", Help: "Error frames sent to clients, by code."},
			[]string{"code"}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_disconnects_total", Help: "Connections closed, by close code."},
			[]string{"code"}),
		APIRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_api_requests_total", Help: "Server API requests, by endpoint and status."},
			[]string{"endpoint", "status"}),
		Recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_recoveries_total", Help: "Subscribes with since, by whether the gap was fully recovered."},
			[]string{"recovered"}),
		AcceptErrors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_accept_errors_total", Help: "Failed accepts on the listener (such as running out of file descriptors); each is retried after a pause."}),
		UringWorkers:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_writer_io_uring_workers", Help: "Writer-pool workers writing with io_uring (the rest write one writev per client)."}),
		HistoryDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_history_dropped_total", Help: "Publications dropped from history, or not kept, to stay within --history-max-bytes."}),
		ConnectionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_connections_refused_total", Help: "WebSocket upgrades refused by a connection limit, by reason (server_full: --max-connections; user_limit: --max-user-connections)."},
			[]string{"reason"}),
	}
	// Both series exist from the start, so an alert on their rate needs no
	// first refusal.
	m.BrokerUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_broker_up", Help: "1 while the broker can be used (memory: always; redis: while its pub/sub subscription is live)."})
	m.BrokerUnavailable = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_broker_unavailable_total", Help: "Operations refused because the broker (Redis) could not be reached, by operation (publish, subscribe, history; notify: a user send or disconnect for the other nodes)."},
		[]string{"op"})
	m.BrokerGaps = prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_broker_gaps_total", Help: "Channels whose local subscribers were closed with 4010 because publications between nodes were lost (Redis interrupted)."})
	for _, op := range []string{"publish", "subscribe", "history", "notify"} {
		m.BrokerUnavailable.WithLabelValues(op)
	}
	m.ConnectionsRefused.WithLabelValues("server_full")
	m.ConnectionsRefused.WithLabelValues("user_limit")
	reg.MustRegister(m.Recoveries, m.Connections, m.ConnectsTotal, m.Subscriptions, m.Channels, m.MessagesIn, m.BytesIn,
		m.MessagesOut, m.BytesOut, m.Publications, m.SlowConsumers, m.AuthFailures, m.RateLimited,
		m.ClientErrors, m.Disconnects, m.APIRequests, m.AcceptErrors, m.UringWorkers, m.HistoryDropped, m.ConnectionsRefused,
		m.BrokerUp, m.BrokerUnavailable, m.BrokerGaps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

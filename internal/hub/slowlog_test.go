package hub

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/sparselog"
	"github.com/herald-rt/herald/internal/testnet"
)

// TestSlowConsumerFloodIsLoggedSparingly: each slow consumer closed used to
// write its own line. 500 subscribers that never read, all closed as slow
// consumers, are one line while the log's clock stands still; the other 499
// are counted, and all 500 in the metric.
func TestSlowConsumerFloodIsLoggedSparingly(t *testing.T) {
	var logs testnet.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var clock sparselog.ManualClock
	sparse := sparselog.New(log, sparselog.Interval)
	sparse.SetClock(clock.Now)
	m := metrics.New()
	h := New(Options{QueueBytes: 10 << 10, PingInterval: time.Minute, PongTimeout: 2 * time.Minute, Sparse: sparse}, log, m)
	block := make(chan struct{})
	defer close(block)
	const n = 500
	clients := make([]*Client, n)
	for i := range clients {
		c := h.NewClient(&countConn{block: block}, ClientOptions{ID: "c" + strconv.Itoa(i), UserID: "u" + strconv.Itoa(i)})
		if err := h.Register(c); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Subscribe(c, "ch", nil); err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	frame := NewFrame(append(NewFrameBuffer(1000), bytes.Repeat([]byte{'x'}, 1000)...))
	for range 100 {
		h.Publish("ch", frame, nil, "")
	}
	for _, c := range clients {
		if !c.Closing() {
			t.Fatalf("%s not closed as a slow consumer", c.ID)
		}
	}
	if got := counter(m.SlowConsumers); got != n {
		t.Fatalf("herald_slow_consumer_closes_total %v, want %d", got, n)
	}
	if got := strings.Count(logs.String(), `msg="slow consumer closed"`); got != 1 || !strings.Contains(logs.String(), "count=1\n") {
		t.Fatalf("%d lines for %d slow consumers, want 1 with count=1:\n%.2000s", got, n, logs.String())
	}
	if got := sparse.Pending("slow consumer closed"); got != n-1 {
		t.Fatalf("%d closes waiting for the next line, want %d", got, n-1)
	}
}

// counter reads a Prometheus counter.
func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

package bench

import (
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds in HDR histograms: log-linear
// buckets with two significant digits (≤1% error), from 1 µs to 10 minutes.
// Recording is a bucket index computation and an increment: no allocation.
const (
	histMinUS   = 1
	histMaxUS   = 600_000_000
	histDigits  = 2
	histShards  = 32
	histPadding = 64
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMinUS, histMaxUS, histDigits) }

// recordUS records a latency in microseconds, clamping to the tracked range.
func recordUS(h *hdrhistogram.Histogram, us int64) {
	if us < 0 {
		us = 0
	}
	if us > histMaxUS {
		us = histMaxUS
	}
	_ = h.RecordValue(us)
}

// shardedHist is a histogram many goroutines record into: each records into
// the shard picked by its connection index, under that shard's mutex, so
// recorders rarely contend. It keeps a cumulative histogram and an interval
// one that progress reports read and reset once a second.
type shardedHist struct {
	shards [histShards]histShard
}

type histShard struct {
	mu       sync.Mutex
	total    *hdrhistogram.Histogram
	interval *hdrhistogram.Histogram
	_        [histPadding]byte
}

func newShardedHist() *shardedHist {
	s := &shardedHist{}
	for i := range s.shards {
		s.shards[i].total = newHist()
		s.shards[i].interval = newHist()
	}
	return s
}

// record adds one latency (µs) to shard k (any int; taken modulo).
func (s *shardedHist) record(k int, us int64) {
	sh := &s.shards[uint(k)%histShards]
	sh.mu.Lock()
	recordUS(sh.total, us)
	recordUS(sh.interval, us)
	sh.mu.Unlock()
}

// merged returns the cumulative histogram of every shard.
func (s *shardedHist) merged() *hdrhistogram.Histogram {
	out := newHist()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		out.Merge(sh.total)
		sh.mu.Unlock()
	}
	return out
}

// takeInterval returns what was recorded since the last call and resets it.
func (s *shardedHist) takeInterval() *hdrhistogram.Histogram {
	out := newHist()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		out.Merge(sh.interval)
		sh.interval.Reset()
		sh.mu.Unlock()
	}
	return out
}

// Latency summarises a latency histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// exportHist and importHist move histograms between worker processes.
func exportHist(h *hdrhistogram.Histogram) *hdrhistogram.Snapshot {
	if h == nil {
		return nil
	}
	return h.Export()
}

func importHist(s *hdrhistogram.Snapshot) *hdrhistogram.Histogram {
	if s == nil {
		return newHist()
	}
	return hdrhistogram.Import(s)
}

package bench

import (
	"fmt"
	"time"
)

// fillConnect reports the connect phase: how many connected, how fast and
// with what latency. span is the phase's length by the driver's clock, used
// when the fleets report none of their own.
func fillConnect(r *Report, m *fleetResult, span time.Duration) {
	r.Connected = m.Connected
	r.ConnectErrors = m.ConnectErrors
	r.Dropped = m.Dropped
	r.ErrorFrames = m.ErrorFrames
	if s := time.Duration(m.ConnectEndNs - m.ConnectStartNs); s > 0 {
		span = s
	}
	r.ConnectSeconds = span.Seconds()
	if span > 0 {
		r.ConnectRate = float64(m.Connected) / span.Seconds()
	}
	if h := importHist(m.ConnectHist); h.TotalCount() > 0 {
		l := summarize(h)
		r.ConnectLatency = &l
	}
}

// fillPublishing reports what a publishing scenario published and what
// was delivered: counts, latency, throughput and bytes on the wire.
func fillPublishing(r *Report, cfg Config, m *fleetResult, w *window) {
	pub := &w.pub
	r.Rate = cfg.Rate
	r.PayloadBytes = cfg.Payload
	r.PublishVia = cfg.PublishVia
	r.Publishers = cfg.Publishers
	r.Scheduled = cfg.publications()
	r.Published = pub.sent
	r.PublishErrors = nonEmpty(pub.errors)
	r.PublisherBehindMax = float64(pub.behindMax) / float64(time.Millisecond)
	if pub.late != nil && pub.late.TotalCount() > 0 {
		l := summarize(pub.late)
		r.PublisherLate = &l
	}
	r.SpinMS = float64(cfg.spin()) / float64(time.Millisecond)
	if !pub.start.IsZero() {
		r.PublishSeconds = pub.end.Sub(pub.start).Seconds()
	}
	r.Expected = w.expected
	r.Delivered = m.Delivered
	r.Lost = m.Lost
	r.Duplicated = m.Duplicated
	r.Reordered = m.Reordered
	r.Late = m.Late
	r.Unparsed = m.Unparsed
	if h := importHist(m.LatencyHist); h.TotalCount() > 0 {
		l := summarize(h)
		r.Latency = &l
	}
	if !pub.start.IsZero() && m.LastDeliveryNs > pub.start.UnixNano() {
		end := max(m.LastDeliveryNs, pub.end.UnixNano())
		r.DeliveriesPerSec = float64(m.Delivered) / time.Duration(end-pub.start.UnixNano()).Seconds()
	}
	fillWireBytes(r, cfg, m)
}

// fillWireBytes reports the bytes deliveries took, and notes what makes
// those numbers or the order of deliveries unrepresentative.
func fillWireBytes(r *Report, cfg Config, m *fleetResult) {
	r.Compressible = cfg.Compressible
	r.WireBytes = m.WireBytes
	if m.Delivered > 0 {
		r.WireBytesPerDelivery = float64(m.WireBytes) / float64(m.Delivered)
		r.MessageBytesPerDelivery = float64(m.MessageBytes) / float64(m.Delivered)
	}
	if cfg.Compress && !cfg.Compressible && cfg.Payload >= 512 {
		r.Notes = append(r.Notes, "--compress without --compressible: the default pad is a run of 'x', which deflates unrealistically well")
	}
	if cfg.Publishers > 1 && m.Reordered > 0 {
		r.Notes = append(r.Notes, "with --publishers > 1, publications of different lanes may reach the server out of order: reordering is expected")
	}
}

// fillCompression reports whether the server took the offered
// permessage-deflate.
func fillCompression(r *Report, cfg Config, m *fleetResult) {
	if !cfg.Compress {
		return
	}
	r.Compression = &Compression{Offered: true, AcceptedConns: m.DeflateConns, CompressedFrames: m.CompressedFrames}
	switch {
	case m.Connected > 0 && m.DeflateConns == 0:
		r.Notes = append(r.Notes, "the server did NOT accept permessage-deflate (offered with --compress): every delivery was uncompressed")
	case m.DeflateConns < m.Connected:
		r.Notes = append(r.Notes, fmt.Sprintf("the server accepted permessage-deflate on only %d of %d connections", m.DeflateConns, m.Connected))
	}
}

// fillServerCost reports the server's CPU over the window, and its cost as
// the scenario counts it (needs --server-pid and both samples).
func (run *runState) fillServerCost(sc *scenario, m *fleetResult, w *window) {
	r := run.r
	if run.cfg.ServerPID == 0 || w.start.at.IsZero() || w.end.at.IsZero() {
		return
	}
	cpu := w.end.cpu - w.start.cpu
	wall := w.end.at.Sub(w.start.at)
	r.ServerCPUSeconds = cpu.Seconds()
	if wall > 0 {
		r.ServerCPUPercent = 100 * cpu.Seconds() / wall.Seconds()
	}
	sc.serverCost(run, m, w, cpu)
	if cpu < 200*time.Millisecond && sc.publishes {
		r.Notes = append(r.Notes, "server CPU is read from /proc in 10 ms ticks: short windows make per-delivery CPU imprecise")
	}
}

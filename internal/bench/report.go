package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one run. Fields that do not apply to the scenario
// (or could not be measured) are zero and omitted from JSON.
type Report struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Workers  int    `json:"workers"`
	// WorkersFailed is how many worker processes gave no result (they
	// died, or stopped answering): their connections are missing from every
	// figure, and Unaccounted is the deliveries their subscribers were
	// expected to receive, neither delivered nor lost.
	WorkersFailed int    `json:"workers_failed,omitempty"`
	Unaccounted   uint64 `json:"deliveries_unaccounted,omitempty"`
	Reader        string `json:"reader"` // receive path: epoll or goroutine
	// Protocol is "sse" when the subscribers were event streams, "socketio"
	// when they were Socket.IO sockets (empty: native WebSocket).
	Protocol string `json:"protocol,omitempty"`
	// SubscribeInURL: connections subscribed through the upgrade request.
	SubscribeInURL bool    `json:"subscribe_in_url,omitempty"`
	Interrupted    bool    `json:"interrupted,omitempty"`
	StartedAt      string  `json:"started_at"`
	WallSeconds    float64 `json:"wall_seconds"`

	// Connections.
	Conns          int            `json:"conns"`
	Connected      int            `json:"connected"`
	ConnectErrors  map[string]int `json:"connect_errors,omitempty"`
	ConnectSeconds float64        `json:"connect_seconds"`
	ConnectRate    float64        `json:"connects_per_second"`
	ConnectLatency *Latency       `json:"connect_latency,omitempty"`
	Dropped        map[string]int `json:"dropped,omitempty"` // connections lost before the end, by reason

	// Publications and deliveries.
	Rate               float64        `json:"rate,omitempty"`
	PayloadBytes       int            `json:"payload_bytes,omitempty"`
	PublishVia         string         `json:"publish_via,omitempty"`
	Publishers         int            `json:"publishers,omitempty"`
	Scheduled          uint64         `json:"publications_scheduled,omitempty"`
	Published          uint64         `json:"publications_sent,omitempty"`
	PublishErrors      map[string]int `json:"publish_errors,omitempty"`
	PublisherBehindMax float64        `json:"publisher_behind_max_ms,omitempty"`
	// PublisherLate is how late publications went out after their due
	// time (the publisher's own timing error, counted in latency).
	PublisherLate *Latency `json:"publisher_late,omitempty"`
	// SpinMS is the --spin in effect (0 when off or turned off by the rate).
	SpinMS           float64        `json:"spin_ms"`
	PublishSeconds   float64        `json:"publish_seconds,omitempty"`
	Expected         uint64         `json:"deliveries_expected,omitempty"`
	Delivered        uint64         `json:"delivered,omitempty"`
	Lost             uint64         `json:"lost"`
	Duplicated       uint64         `json:"duplicated"`
	Reordered        uint64         `json:"reordered"`
	Late             uint64         `json:"late,omitempty"`
	Unparsed         uint64         `json:"unparsed,omitempty"`
	DeliveriesPerSec float64        `json:"deliveries_per_second,omitempty"`
	Latency          *Latency       `json:"latency,omitempty"`
	ErrorFrames      map[string]int `json:"error_frames,omitempty"`

	// Bytes the subscribers read from their sockets after subscribing:
	// every frame's header and payload as received (compressed size when
	// compressed; TCP/IP headers not included), in total and per delivery,
	// and the message frames' inflated size per delivery.
	Compressible            bool         `json:"compressible_payload,omitempty"`
	WireBytes               uint64       `json:"wire_bytes,omitempty"`
	WireBytesPerDelivery    float64      `json:"wire_bytes_per_delivery,omitempty"`
	MessageBytesPerDelivery float64      `json:"message_bytes_per_delivery,omitempty"`
	Compression             *Compression `json:"compression,omitempty"` // with --compress

	// Server (with --server-pid).
	ServerPID          int     `json:"server_pid,omitempty"`
	ServerExited       bool    `json:"server_exited,omitempty"` // /proc/PID could not be read at the end
	ServerRSSBeforeKiB int64   `json:"server_rss_before_kib,omitempty"`
	ServerRSSAfterKiB  int64   `json:"server_rss_after_kib,omitempty"`
	ServerRSSEndKiB    int64   `json:"server_rss_end_kib,omitempty"`
	RSSPerConnKiB      float64 `json:"server_rss_per_conn_kib,omitempty"` // idle: at the end of the hold
	// RSSPerConnAfterConnectKiB is, for idle, the figure right after the
	// storm, before the hold.
	RSSPerConnAfterConnectKiB float64 `json:"server_rss_per_conn_after_connect_kib,omitempty"`
	ServerCPUSeconds          float64 `json:"server_cpu_seconds,omitempty"`
	ServerCPUPercent          float64 `json:"server_cpu_percent,omitempty"`
	ServerCPUPerDelivU        float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ServerCPUPerConnU         float64 `json:"server_cpu_us_per_connect,omitempty"`

	// The generator itself.
	GeneratorCPUSeconds float64 `json:"generator_cpu_seconds"`
	GeneratorCPUPerDelU float64 `json:"generator_cpu_us_per_delivery,omitempty"`
	// Over the connect phase (dial, upgrade, subscribe, hand-off to the
	// reader), per connection made.
	GeneratorCPUPerConnU float64 `json:"generator_cpu_us_per_connect,omitempty"`

	Recovery *recoveryStats `json:"recovery,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
}

// Compression is what came of offering permessage-deflate (--compress).
type Compression struct {
	Offered          bool   `json:"offered"`
	AcceptedConns    int    `json:"accepted_conns"`    // connections on which the server accepted it
	CompressedFrames uint64 `json:"compressed_frames"` // message frames that arrived compressed (RSV1)
}

// Write prints the report as a table, or as JSON.
func (r *Report) Write(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tb := table{tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	r.writeRun(tb)
	r.writeConnections(tb)
	if r.Scheduled > 0 {
		r.writePublishing(tb)
	}
	r.writeCompression(tb)
	if len(r.ErrorFrames) > 0 {
		tb.row("error frames", "%s", fmtMap(r.ErrorFrames))
	}
	if r.ServerPID != 0 {
		r.writeServer(tb)
	}
	r.writeGenerator(tb)
	if rc := r.Recovery; rc != nil {
		tb.row("recovery", "reconnects %d (failed %d), recovered true %d / false %d / absent %d", rc.Reconnects, rc.ReconnectFail, rc.Recovered, rc.NotRecovered, rc.NoFlag)
	}
	for _, n := range r.Notes {
		tb.row("note", "%s", n)
	}
	return tb.tw.Flush()
}

// table is the report's text form: one row per line, key and value.
type table struct{ tw *tabwriter.Writer }

func (t table) row(k, f string, a ...any) {
	fmt.Fprintf(t.tw, "%s\t"+f+"\n", append([]any{k}, a...)...)
}

// writeRun writes the title, the target and failed workers.
func (r *Report) writeRun(tb table) {
	title := "herald bench " + r.Scenario
	if r.Interrupted {
		title += " (INTERRUPTED: partial results)"
	}
	fmt.Fprintln(tb.tw, title)
	tb.row("target", "%s  (workers %d, reader %s, wall %.1fs)", r.Target, r.Workers, r.Reader, r.WallSeconds)
	if r.WorkersFailed > 0 {
		lost := ""
		if r.Unaccounted > 0 {
			lost = fmt.Sprintf("; %d expected deliveries went with them, neither delivered nor lost", r.Unaccounted)
		}
		tb.row("WORKERS FAILED", "%d of %d: their connections are missing from every figure below%s", r.WorkersFailed, r.Workers, lost)
	}
}

// writeConnections writes the connect phase.
func (r *Report) writeConnections(tb table) {
	how := ""
	if r.SubscribeInURL {
		how = " (subscribed in the upgrade request)"
	}
	switch r.Protocol {
	case "sse":
		how = " (Server-Sent Events streams, channels in the URL)"
	case "socketio":
		how = " (Socket.IO over WebSocket, subscribe events)"
	}
	tb.row("connections", "%d/%d connected in %.2fs = %.0f connects+subscribes/s%s", r.Connected, r.Conns, r.ConnectSeconds, r.ConnectRate, how)
	if len(r.ConnectErrors) > 0 {
		tb.row("connect errors", "%s", fmtMap(r.ConnectErrors))
	}
	if l := r.ConnectLatency; l != nil && l.Count > 0 {
		tb.row("connect latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
	}
	if len(r.Dropped) > 0 {
		tb.row("dropped early", "%s", fmtMap(r.Dropped))
	}
}

// writePublishing writes what was published and delivered.
func (r *Report) writePublishing(tb table) {
	tb.row("publications", "%d sent of %d scheduled at %.4g/s over %.1fs via %s (%d lane(s)), %d-byte payload", r.Published, r.Scheduled, r.Rate, r.PublishSeconds, r.PublishVia, r.Publishers, r.PayloadBytes)
	if l := r.PublisherLate; l != nil && l.Count > 0 {
		spin := "spin off"
		if r.SpinMS > 0 {
			spin = "spin " + ms(r.SpinMS)
		}
		tb.row("sent late by", "p50 %s  p99 %s  max %s  (%s; counted in latency)", ms(l.P50), ms(l.P99), ms(l.Max), spin)
	}
	if r.PublisherBehindMax > 1 {
		tb.row("publisher lag", "fell up to %s behind schedule (counted in latency)", ms(r.PublisherBehindMax))
	}
	if len(r.PublishErrors) > 0 {
		tb.row("publish errors", "%s", fmtMap(r.PublishErrors))
	}
	tb.row("deliveries", "%d of %d expected  (%.0f/s)", r.Delivered, r.Expected, r.DeliveriesPerSec)
	tb.row("lost/dup/reord", "%d / %d / %d%s", r.Lost, r.Duplicated, r.Reordered, lateNote(r.Late))
	if l := r.Latency; l != nil && l.Count > 0 {
		tb.row("latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), l.Count)
	}
	if r.WireBytes > 0 {
		tb.row("wire bytes", "%s total, %.0f B/delivery (messages %.0f B/delivery inflated%s)", byteSize(r.WireBytes), r.WireBytesPerDelivery, r.MessageBytesPerDelivery, payloadKind(r.Compressible))
	}
}

// writeCompression writes whether permessage-deflate was taken.
func (r *Report) writeCompression(tb table) {
	c := r.Compression
	switch {
	case c == nil:
	case r.Connected == 0:
		tb.row("compression", "permessage-deflate offered (no connection was made)")
	case c.AcceptedConns == 0:
		tb.row("compression", "permessage-deflate offered, NOT accepted by the server")
	default:
		tb.row("compression", "permessage-deflate accepted on %d/%d connections; %d message frames arrived compressed", c.AcceptedConns, r.Connected, c.CompressedFrames)
	}
}

// writeServer writes the server's memory and CPU.
func (r *Report) writeServer(tb table) {
	end := kib(r.ServerRSSEndKiB)
	if r.ServerExited {
		end = "none (EXITED)"
	}
	tb.row("server RSS", "%s before, %s after connect, %s at end", kib(r.ServerRSSBeforeKiB), kib(r.ServerRSSAfterKiB), end)
	switch {
	case r.Scenario == "idle" && r.RSSPerConnKiB != 0:
		tb.row("server RSS/conn", "%.2f KiB at the end of the hold (%.2f KiB right after connecting)", r.RSSPerConnKiB, r.RSSPerConnAfterConnectKiB)
	case r.RSSPerConnKiB != 0:
		tb.row("server RSS/conn", "%.2f KiB", r.RSSPerConnKiB)
	}
	if !r.ServerExited || r.ServerCPUSeconds != 0 {
		tb.row("server CPU", "%.2fs (%.0f%% of one core)", r.ServerCPUSeconds, r.ServerCPUPercent)
	}
	if r.ServerCPUPerDelivU != 0 {
		tb.row("server CPU/delivery", "%.3f µs", r.ServerCPUPerDelivU)
	}
	if r.ServerCPUPerConnU != 0 {
		tb.row("server CPU/connect", "%.1f µs", r.ServerCPUPerConnU)
	}
}

// writeGenerator writes the generator's own CPU.
func (r *Report) writeGenerator(tb table) {
	gen := fmt.Sprintf("%.2fs", r.GeneratorCPUSeconds)
	var per []string
	if r.GeneratorCPUPerConnU != 0 {
		per = append(per, fmt.Sprintf("%.1f µs/connect", r.GeneratorCPUPerConnU))
	}
	if r.GeneratorCPUPerDelU != 0 {
		per = append(per, fmt.Sprintf("%.3f µs/delivery", r.GeneratorCPUPerDelU))
	}
	if len(per) > 0 {
		gen += " (" + strings.Join(per, ", ") + ")"
	}
	tb.row("generator CPU", "%s", gen)
}

func lateNote(n uint64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("  (%d arrived > %d seqs late or duplicated late)", n, trackWindow)
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.3fms", v)
	}
}

func payloadKind(compressible bool) string {
	if compressible {
		return "; compressible payload"
	}
	return ""
}

func byteSize(v uint64) string {
	switch {
	case v >= 10<<30:
		return fmt.Sprintf("%.1f GiB", float64(v)/(1<<30))
	case v >= 10<<20:
		return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
	case v >= 10<<10:
		return fmt.Sprintf("%.1f KiB", float64(v)/(1<<10))
	default:
		return fmt.Sprintf("%d B", v)
	}
}

func kib(v int64) string {
	if v >= 10*1024 {
		return fmt.Sprintf("%.1f MiB", float64(v)/1024)
	}
	return fmt.Sprintf("%d KiB", v)
}

func fmtMap(m map[string]int) string {
	var b strings.Builder
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", k, m[k])
	}
	return b.String()
}

func secs(d time.Duration) float64 { return d.Seconds() }

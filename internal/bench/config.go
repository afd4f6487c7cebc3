// Package bench is herald's load generator: it opens many authenticated
// WebSocket connections to a herald server on a loopback address, publishes
// on a fixed schedule, and measures delivery latency (without coordinated
// omission), loss, duplication and reordering, connect rates, and the
// server's memory and CPU per connection and per delivery.
//
// Scenarios: idle, fanout, channels, connect, recovery; see Config and
// docs/performance.md. The receive path stays cheap next to the server it
// measures: on Linux a few epoll loops over raw sockets parse frames from
// per-connection buffers (rx_linux.go); otherwise (and with --reader
// goroutine) one goroutine per connection reads frames with a lean reader
// (gobwas/ws headers over a small bufio.Reader). Either finds the sequence
// number and intended send time by scanning bytes.
package bench

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is one benchmark run.
type Config struct {
	// Scenario is idle, fanout, channels, connect or recovery.
	Scenario string
	// URL is the server's WebSocket URL; it must be on a loopback address.
	// Several, separated by commas, are the nodes of one cluster (herald
	// --broker redis): worker k connects to the (k mod n)-th, and the
	// publisher uses the first (or APIURL).
	URL string
	// APIURL is the server API base (http://HOST:PORT); default from URL.
	APIURL string
	// JWTSecret signs the connections' HS256 tokens (user ids bench-0, bench-1, …).
	JWTSecret string
	// APIKey authenticates POST /api/publish.
	APIKey string
	// TokenTTL is the tokens' lifetime.
	TokenTTL time.Duration

	// Conns is the number of subscriber connections.
	Conns int
	// Concurrency is the number of concurrent dialers (split between workers).
	Concurrency int
	// ConnectTimeout bounds one connection's dial, upgrade and subscribe.
	ConnectTimeout time.Duration
	// ReadBuffer is each connection's read buffer size.
	ReadBuffer int
	// Reader is the receive path: "epoll" (the default on Linux: a few
	// receive loops, each a goroutine over its own level-triggered epoll
	// instance and raw non-blocking sockets) or "goroutine" (one goroutine
	// per connection blocking in a read; the only one elsewhere). The
	// recovery scenario always uses goroutine: it reconnects inside the
	// reader.
	Reader string

	// Hold is how long idle connections are held (idle).
	Hold time.Duration
	// Rate is publications per second (fanout, channels, recovery).
	Rate float64
	// Payload is the size of each publication's data in bytes.
	Payload int
	// Compressible fills the payload with JSON-like records (repeated keys,
	// enumerated values, pseudo-random ids and numbers) that deflate to
	// a quarter to a third, instead of a run of 'x' (see appendCompressible).
	Compressible bool
	// Compress makes subscribers offer permessage-deflate (RFC 7692) with no
	// context takeover and inflate compressed deliveries; the report says
	// whether the server accepted it.
	Compress bool
	// SubscribeInURL subscribes each connection through its upgrade
	// request's subscribe parameter (one round trip: connected and the
	// subscribed replies arrive together) instead of subscribe commands
	// sent after connected.
	SubscribeInURL bool
	// Duration is how long to publish.
	Duration time.Duration
	// Grace is how long to wait for outstanding deliveries after publishing.
	Grace time.Duration
	// PublishVia is "api" (POST /api/publish) or "ws" (client message frames).
	PublishVia string
	// Publishers is the number of concurrent publishing lanes (HTTP
	// connections or WebSockets). With more than one, publications of
	// different lanes may legitimately arrive out of order.
	Publishers int
	// Spin is how long before each publication's due time the publisher
	// stops sleeping and spins (yielding) until the due time: Go's timers
	// fire 0–1 ms late on Linux, where the runtime sleeps in whole
	// milliseconds. Spinning is used only while Rate × Spin ≤ maxSpinShare
	// (at most about a tenth of a core); 0 turns it off.
	Spin time.Duration
	// Channel is the channel of idle, fanout, connect and recovery.
	Channel string
	// GroupSize is the number of connections per group channel (channels).
	GroupSize int

	// DropEvery and DropDown drive the recovery scenario: every DropEvery a
	// tenth of the connections drop and reconnect after DropDown.
	DropEvery time.Duration
	DropDown  time.Duration

	// ServerPID enables server RSS and CPU measurement from /proc.
	ServerPID int
	// Workers is the number of worker processes; 1 runs in this process.
	Workers int
	// WorkerExe is the executable started for workers; default os.Executable().
	WorkerExe string

	// Protocol is how subscribers connect: "ws" (the native WebSocket
	// protocol), "sse" (a Server-Sent Events stream on SSEPath of the
	// --url host, channels named in its URL, read by one goroutine per
	// connection) or "socketio" (a Socket.IO socket over WebSocket on
	// SocketIOPath, subscribed with subscribe events); publishing is
	// unchanged.
	Protocol string
	// SSEPath is the server's --sse-path, for Protocol "sse".
	SSEPath string
	// SocketIOPath is the server's --socketio-path, for Protocol
	// "socketio" (Socket.IO subscribers over WebSocket, sioconn.go).
	SocketIOPath string

	// JSON prints the report as JSON instead of a table.
	JSON bool
	// Quiet turns off progress lines on stderr.
	Quiet bool
}

// Defaults returns a configuration with every default set.
func Defaults() Config {
	return Config{
		Scenario:       "fanout",
		URL:            "ws://127.0.0.1:8080/ws",
		TokenTTL:       2 * time.Hour,
		Conns:          1000,
		Concurrency:    64,
		ConnectTimeout: 15 * time.Second,
		ReadBuffer:     4096,
		Reader:         defaultReader,
		Hold:           10 * time.Second,
		Rate:           10,
		Payload:        100,
		Duration:       10 * time.Second,
		Grace:          5 * time.Second,
		PublishVia:     "api",
		Publishers:     1,
		Spin:           1500 * time.Microsecond,
		Channel:        "bench",
		GroupSize:      10,
		DropEvery:      time.Second,
		DropDown:       100 * time.Millisecond,
		Workers:        1,
		Protocol:       "ws",
		SSEPath:        "/sse",
		SocketIOPath:   "/socket.io/",
	}
}

// Limits that keep every run bounded.
const (
	maxConns       = 1_000_000
	maxDuration    = time.Hour
	maxPublishRate = 1_000_000
	maxWorkers     = 64
	// maxSpinShare bounds what the publisher's spinning may cost: it spins
	// only while Rate × Spin is at most this (a tenth of a core).
	maxSpinShare = 0.1
)

// spin is how long before each due time the publisher spins, or 0 when
// spinning at this rate would cost more than maxSpinShare of a core.
func (c *Config) spin() time.Duration {
	if c.Rate*c.Spin.Seconds() > maxSpinShare {
		return 0
	}
	return c.Spin
}

// urls returns the WebSocket URLs of URL.
func (c *Config) urls() []string { return strings.Split(c.URL, ",") }

// Validate checks c, including that every target is a loopback address.
func (c *Config) Validate() error {
	sc := scenarioNamed(c.Scenario)
	if sc == nil {
		return fmt.Errorf("unknown scenario %q (want one of %v)", c.Scenario, ScenarioNames())
	}
	for _, check := range []func() error{c.checkTargets, c.checkConnections, c.checkTimes, c.checkPublisher, c.checkReader} {
		if err := check(); err != nil {
			return err
		}
	}
	if sc.check != nil {
		if err := sc.check(c); err != nil {
			return err
		}
	}
	per := (c.Conns + c.Workers - 1) / c.Workers
	if limit := maxOpenFiles() - 200; per > limit {
		return fmt.Errorf("%d connections per process exceed the open-file limit (%d usable); use more --workers", per, limit)
	}
	return nil
}

// checkTargets checks the URLs (loopback only) and the secret.
func (c *Config) checkTargets() error {
	urls := c.urls()
	for _, u := range urls {
		if _, err := parseTarget(u, c.APIURL); err != nil {
			return err
		}
	}
	if len(urls) > 1 && c.Workers < len(urls) {
		return fmt.Errorf("--workers must be at least the number of --url nodes (%d): each worker connects to one node", len(urls))
	}
	if c.JWTSecret == "" {
		return errors.New("--jwt-secret is required (the server's HS256 secret; tokens are minted locally)")
	}
	return nil
}

// checkConnections checks how many connections, and how they are made.
func (c *Config) checkConnections() error {
	switch {
	case c.Conns < 1 || c.Conns > maxConns:
		return fmt.Errorf("--conns must be 1…%d", maxConns)
	case c.Concurrency < 1:
		return errors.New("--concurrency must be ≥ 1")
	case c.Workers < 1 || c.Workers > maxWorkers:
		return fmt.Errorf("--workers must be 1…%d", maxWorkers)
	case c.Workers > c.Conns:
		return errors.New("--workers must not exceed --conns")
	case c.ReadBuffer < 256 || c.ReadBuffer > 1<<20:
		return errors.New("--read-buffer must be 256 B … 1 MiB")
	case c.GroupSize < 1:
		return errors.New("--group-size must be ≥ 1")
	}
	return nil
}

// checkTimes checks the durations.
func (c *Config) checkTimes() error {
	switch {
	case c.ConnectTimeout <= 0 || c.TokenTTL < time.Minute:
		return errors.New("--connect-timeout must be > 0 and the token TTL ≥ 1m")
	case c.Hold < 0 || c.Hold > maxDuration || c.Duration <= 0 || c.Duration > maxDuration || c.Grace < 0 || c.Grace > 10*time.Minute:
		return errors.New("--hold and --duration must be within 0…1h, --grace within 0…10m")
	}
	return nil
}

// checkPublisher checks the publisher's options, and what publishing needs.
func (c *Config) checkPublisher() error {
	switch {
	case c.Payload < 0 || c.Payload > 1<<20:
		return errors.New("--payload must be 0 … 1 MiB")
	case c.Publishers < 1 || c.Publishers > 256:
		return errors.New("--publishers must be 1…256")
	case c.Spin < 0 || c.Spin > 10*time.Millisecond:
		return errors.New("--spin must be 0 … 10ms")
	case c.PublishVia != "api" && c.PublishVia != "ws":
		return fmt.Errorf("--publish-via must be api or ws, not %q", c.PublishVia)
	case !c.publishes():
		return nil
	case c.Rate <= 0 || c.Rate > maxPublishRate:
		return fmt.Errorf("--rate must be > 0 and ≤ %d", maxPublishRate)
	case c.Rate*c.Duration.Seconds() < 1:
		return errors.New("--rate × --duration must be at least one publication")
	case c.PublishVia == "api" && c.APIKey == "":
		return errors.New("--api-key is required to publish through the server API (or use --publish-via ws)")
	}
	return nil
}

// checkReader checks the receive path.
func (c *Config) checkReader() error {
	switch {
	case c.Reader != "epoll" && c.Reader != "goroutine":
		return fmt.Errorf("--reader must be epoll or goroutine, not %q", c.Reader)
	case c.Reader == "epoll" && !epollSupported:
		return errNoEpoll
	}
	return c.checkProtocol()
}

// checkProtocol checks how subscribers connect.
func (c *Config) checkProtocol() error {
	switch {
	case c.Protocol != "ws" && c.Protocol != "sse" && c.Protocol != "socketio":
		return fmt.Errorf("--protocol must be ws, sse or socketio, not %q", c.Protocol)
	case c.Protocol == "sse" && (c.Scenario == "recovery" || c.Compress || !strings.HasPrefix(c.SSEPath, "/")):
		return errors.New("--protocol sse: not with the recovery scenario or --compress, and --sse-path must start with /")
	case c.Protocol == "socketio" && (c.Scenario == "recovery" || c.Compress || c.SubscribeInURL || !strings.HasPrefix(c.SocketIOPath, "/")):
		return errors.New("--protocol socketio: not with the recovery scenario, --compress or --subscribe-in-url, and --socketio-path must start with /")
	}
	return nil
}

// errNoEpoll refuses --reader epoll where there is no epoll.
var errNoEpoll = errors.New("--reader epoll is built for Linux only (not for 386); use --reader goroutine")

// reader is the receive path the fleets use: the one the scenario needs
// (recovery reconnects inside the reader), goroutine for event streams
// (read by their own reader), else --reader.
func (c *Config) reader() string {
	if sc := scenarioNamed(c.Scenario); sc != nil && sc.reader != "" {
		return sc.reader
	}
	if c.Protocol == "sse" {
		return "goroutine"
	}
	return c.Reader
}

// publishes reports whether c's scenario publishes.
func (c *Config) publishes() bool {
	sc := scenarioNamed(c.Scenario)
	return sc != nil && sc.publishes
}

// streams is the number of publication streams (channels published to).
func (c *Config) streams() int {
	if sc := scenarioNamed(c.Scenario); sc != nil && sc.grouped {
		return (c.Conns + c.GroupSize - 1) / c.GroupSize
	}
	return 1
}

// publications is the number of publications scheduled.
func (c *Config) publications() uint64 {
	return uint64(c.Rate*c.Duration.Seconds() + 0.5)
}

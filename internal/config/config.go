// Package config holds herald's configuration: one struct, and one table of
// options (options.go) from which its defaults, its checks, its loading from
// flags, HERALD_* environment variables and an optional YAML or TOML file,
// the help of `herald serve` and docs/configuration.md all come.
package config

import "time"

// Config is the whole server configuration. The zero value is not usable; start
// from Default(). Every field but Namespaces is an option of the options table
// (options.go), which gives its flag, environment variable, file key, default
// and help.
type Config struct {
	// Addr is the listen address for HTTP and WebSocket. Default ":8080"; the
	// PORT environment variable, when set, gives ":"+PORT unless Addr is set
	// explicitly by flag, HERALD_ADDR or file.
	Addr string
	// WSPath is the WebSocket endpoint path. Default "/ws".
	WSPath string
	// ConformanceEchoPath, when set, is a WebSocket path whose connections
	// echo every data message instead of speaking the protocol. Default ""
	// (off).
	ConformanceEchoPath string
	// SSEPath is the Server-Sent Events stream path (commands: SSEPath +
	// "/command"). Default "/sse"; empty turns SSE off.
	SSEPath string
	// APIKeys are the keys accepted by the server API (/api/*, /call). Empty
	// means the API answers 403 to everything.
	APIKeys []string
	// JWTSecret is the HS256 secret. Empty disables HS256.
	JWTSecret string
	// JWTPublicKeyFile is a PEM file with an RSA or ECDSA public key for RS256/ES256.
	JWTPublicKeyFile string
	// InsecureQueryAuth accepts ?userId=&role=&org= without a token. Development only.
	InsecureQueryAuth bool
	// AllowedOrigins lists Origin values accepted on the upgrade. Empty means the
	// Origin's host must equal the request's Host; "*" allows any origin.
	AllowedOrigins []string
	// MaxMessageBytes bounds one incoming WebSocket message. Default 1 MiB.
	MaxMessageBytes int64
	// PingInterval is how often the server sends a WebSocket ping. Default 30s.
	PingInterval time.Duration
	// PongTimeout closes a connection silent for this long. Default 60s.
	PongTimeout time.Duration
	// ClientQueueBytes bounds the per-connection send queue; past it the client
	// is closed as a slow consumer. Default 1 MiB.
	ClientQueueBytes int64
	// HistoryMaxBytes bounds the history all channels keep together (data,
	// event and publisher, plus 128 bytes per publication). Default 512 MiB.
	HistoryMaxBytes int64
	// MaxQueuedBytes bounds what the whole process holds for clients: send
	// queues, replies, messages being received and idempotency keys. 0 (the
	// default) derives it from the machine's memory (see package budget).
	MaxQueuedBytes int64
	// MaxUserQueuedBytes bounds the same for all connections of one user
	// together. 0 (the default) derives it from MaxQueuedBytes.
	MaxUserQueuedBytes int64
	// MaxSubscriptions bounds channels per connection. Default 1000.
	MaxSubscriptions int
	// MaxConnections bounds the WebSocket connections open at once; past it
	// an upgrade is refused with 503. 0 (the default) derives it from the
	// process's descriptor limit (see the server), leaving room for the API.
	MaxConnections int
	// MaxUserConnections bounds the connections of one user open at once;
	// past it an upgrade is refused with 429. 0 (the default) means no bound.
	MaxUserConnections int
	// RateLimit is client commands per second per connection. Default 100; 0 disables.
	RateLimit float64
	// RateBurst is the limiter's burst. Default 200.
	RateBurst int
	// RateLimitStrikes closes a connection after this many consecutive rate-limited
	// commands. Default 50.
	RateLimitStrikes int
	// Compression negotiates permessage-deflate with clients that offer it.
	// Default true.
	Compression bool
	// CompressionThreshold is the smallest message compressed. Default 512.
	CompressionThreshold int64
	// IOUring lets the writer pool write many connections with one io_uring
	// submission on Linux kernels that allow it (else, and when false, one
	// writev per connection). Default true.
	IOUring bool
	// IdempotencyWindow is how long a publish's idempotencyKey is remembered
	// per channel. Default 5m; 0 disables idempotency keys.
	IdempotencyWindow time.Duration
	// Broker is where channel state lives: "memory" (the default: this
	// process only) or "redis" (shared by every node on the same Redis and
	// prefix).
	Broker string
	// RedisURL is the Redis server of the redis broker: redis://,
	// rediss:// (TLS) or unix://. Default redis://127.0.0.1:6379/0.
	RedisURL string
	// RedisPrefix starts every Redis key and the pub/sub channel, so that
	// several clusters can share one Redis. Default "herald".
	RedisPrefix string
	// ShutdownTimeout bounds graceful shutdown. Default 10s.
	ShutdownTimeout time.Duration
	// DebugAddr, when set, serves net/http/pprof on this separate address
	// (keep it on loopback). Empty (the default) serves nothing.
	DebugAddr string
	// LogFormat is "text" (default) or "json".
	LogFormat string
	// LogLevel is debug, info (default), warn or error.
	LogLevel string
	// SocketIOPath is where Socket.IO clients connect (Engine.IO's path);
	// empty turns Socket.IO off. Default "/socket.io/".
	SocketIOPath string
	// ConformanceSocketIO serves the Socket.IO and Engine.IO protocol test
	// suites' reference behaviour at /socket.io/ and /engine.io/, without
	// authentication. For conformance runs only.
	ConformanceSocketIO bool
	// Namespaces are per-prefix channel rules; see Namespace. File only.
	Namespaces []Namespace
}

// Namespace holds the rules for channels whose name equals Prefix or starts
// with Prefix+":". The longest matching prefix wins; Prefix "" is the default
// for channels that match nothing else. Built-in tenant rules (org:, user:,
// system) always apply on top of these and cannot be relaxed.
type Namespace struct {
	Prefix string `yaml:"prefix" toml:"prefix"`
	// Publish lets clients publish with "message". nil means the default (true,
	// except "system" which is never client-publishable).
	Publish *bool `yaml:"publish" toml:"publish"`
	// Echo delivers a client's own publications back to it. Default false.
	Echo bool `yaml:"echo" toml:"echo"`
	// HistorySize is how many publications each channel keeps for history and
	// recovery. 0 keeps none (the default, except org: channels: 1000).
	HistorySize int `yaml:"history_size" toml:"history_size"`
	// HistoryTTL is how long each kept publication lives. 0 with HistorySize > 0
	// means 5m.
	HistoryTTL Duration `yaml:"history_ttl" toml:"history_ttl"`
	// AllowHistory lets clients use the history command and subscribe with
	// "since". nil means true.
	AllowHistory *bool `yaml:"allow_history" toml:"allow_history"`
	// Presence lets clients use the presence command. nil means false, except
	// org: channels (true).
	Presence *bool `yaml:"presence" toml:"presence"`
	// JoinLeave sends join/leave frames to a channel's subscribers when others
	// subscribe or leave. Default false.
	JoinLeave bool `yaml:"join_leave" toml:"join_leave"`
}

// Default returns the configuration used when nothing is set: every
// option's default from the options table.
func Default() Config {
	var c Config
	for _, o := range options() {
		o.setDefault(&c)
	}
	return c
}

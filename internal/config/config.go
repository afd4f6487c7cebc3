// Package config holds herald's configuration: one struct, its defaults, its
// validation and its loading from flags, HERALD_* environment variables and an
// optional YAML or TOML file.
package config

import "time"

// Config is the whole server configuration. The zero value is not usable; start
// from Default().
type Config struct {
	// Addr is the listen address for HTTP and WebSocket. Default ":8080"; the
	// PORT environment variable, when set, gives ":"+PORT unless Addr is set
	// explicitly by flag, HERALD_ADDR or file.
	Addr string `yaml:"addr" toml:"addr"`
	// WSPath is the WebSocket endpoint path. Default "/ws".
	WSPath string `yaml:"ws_path" toml:"ws_path"`
	// APIKeys are the keys accepted by the server API (/api/*, /call). Empty
	// means the API answers 403 to everything.
	APIKeys []string `yaml:"api_keys" toml:"api_keys"`
	// JWTSecret is the HS256 secret. Empty disables HS256.
	JWTSecret string `yaml:"jwt_secret" toml:"jwt_secret"`
	// JWTPublicKeyFile is a PEM file with an RSA or ECDSA public key for RS256/ES256.
	JWTPublicKeyFile string `yaml:"jwt_public_key" toml:"jwt_public_key"`
	// InsecureQueryAuth accepts ?userId=&role=&org= without a token. Development only.
	InsecureQueryAuth bool `yaml:"insecure_query_auth" toml:"insecure_query_auth"`
	// AllowedOrigins lists Origin values accepted on the upgrade. Empty means the
	// Origin's host must equal the request's Host; "*" allows any origin.
	AllowedOrigins []string `yaml:"allowed_origins" toml:"allowed_origins"`
	// MaxMessageBytes bounds one incoming WebSocket message. Default 1 MiB.
	MaxMessageBytes int64 `yaml:"max_message_bytes" toml:"max_message_bytes"`
	// PingInterval is how often the server sends a WebSocket ping. Default 30s.
	PingInterval time.Duration `yaml:"ping_interval" toml:"ping_interval"`
	// PongTimeout closes a connection silent for this long. Default 60s.
	PongTimeout time.Duration `yaml:"pong_timeout" toml:"pong_timeout"`
	// ClientQueueBytes bounds the per-connection send queue; past it the client
	// is closed as a slow consumer. Default 1 MiB.
	ClientQueueBytes int64 `yaml:"client_queue_bytes" toml:"client_queue_bytes"`
	// HistoryMaxBytes bounds the history all channels keep together (data,
	// event and publisher, plus 128 bytes per publication). Default 512 MiB.
	HistoryMaxBytes int64 `yaml:"history_max_bytes" toml:"history_max_bytes"`
	// MaxSubscriptions bounds channels per connection. Default 1000.
	MaxSubscriptions int `yaml:"max_subscriptions" toml:"max_subscriptions"`
	// MaxConnections bounds the WebSocket connections open at once; past it
	// an upgrade is refused with 503. 0 (the default) derives it from the
	// process's descriptor limit (see the server), leaving room for the API.
	MaxConnections int `yaml:"max_connections" toml:"max_connections"`
	// MaxUserConnections bounds the connections of one user open at once;
	// past it an upgrade is refused with 429. 0 (the default) means no bound.
	MaxUserConnections int `yaml:"max_user_connections" toml:"max_user_connections"`
	// RateLimit is client commands per second per connection. Default 100; 0 disables.
	RateLimit float64 `yaml:"rate_limit" toml:"rate_limit"`
	// RateBurst is the limiter's burst. Default 200.
	RateBurst int `yaml:"rate_burst" toml:"rate_burst"`
	// RateLimitStrikes closes a connection after this many consecutive rate-limited
	// commands. Default 50.
	RateLimitStrikes int `yaml:"rate_limit_strikes" toml:"rate_limit_strikes"`
	// Compression negotiates permessage-deflate with clients that offer it.
	// Default true.
	Compression bool `yaml:"compression" toml:"compression"`
	// CompressionThreshold is the smallest message compressed. Default 512.
	CompressionThreshold int64 `yaml:"compression_threshold" toml:"compression_threshold"`
	// IOUring lets the writer pool write many connections with one io_uring
	// submission on Linux kernels that allow it (else, and when false, one
	// writev per connection). Default true.
	IOUring bool `yaml:"io_uring" toml:"io_uring"`
	// IdempotencyWindow is how long a publish's idempotencyKey is remembered
	// per channel. Default 5m; 0 disables idempotency keys.
	IdempotencyWindow time.Duration `yaml:"idempotency_window" toml:"idempotency_window"`
	// Broker is where channel state lives: "memory" (the default: this
	// process only) or "redis" (shared by every node on the same Redis and
	// prefix).
	Broker string `yaml:"broker" toml:"broker"`
	// RedisURL is the Redis server of the redis broker: redis://,
	// rediss:// (TLS) or unix://. Default redis://127.0.0.1:6379/0.
	RedisURL string `yaml:"redis_url" toml:"redis_url"`
	// RedisPrefix starts every Redis key and the pub/sub channel, so that
	// several clusters can share one Redis. Default "herald".
	RedisPrefix string `yaml:"redis_prefix" toml:"redis_prefix"`
	// ShutdownTimeout bounds graceful shutdown. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" toml:"shutdown_timeout"`
	// DebugAddr, when set, serves net/http/pprof on this separate address
	// (keep it on loopback). Empty (the default) serves nothing.
	DebugAddr string `yaml:"debug_addr" toml:"debug_addr"`
	// LogFormat is "text" (default) or "json".
	LogFormat string `yaml:"log_format" toml:"log_format"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `yaml:"log_level" toml:"log_level"`
	// Namespaces are per-prefix channel rules; see Namespace. File only.
	Namespaces []Namespace `yaml:"namespaces" toml:"namespaces"`
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

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		Addr:                 ":8080",
		WSPath:               "/ws",
		MaxMessageBytes:      1 << 20,
		PingInterval:         30 * time.Second,
		PongTimeout:          60 * time.Second,
		ClientQueueBytes:     1 << 20,
		HistoryMaxBytes:      512 << 20,
		MaxSubscriptions:     1000,
		RateLimit:            100,
		RateBurst:            200,
		RateLimitStrikes:     50,
		IdempotencyWindow:    5 * time.Minute,
		Compression:          true,
		CompressionThreshold: 512,
		IOUring:              true,
		Broker:               "memory",
		RedisURL:             "redis://127.0.0.1:6379/0",
		RedisPrefix:          "herald",
		ShutdownTimeout:      10 * time.Second,
		LogFormat:            "text",
		LogLevel:             "info",
	}
}

package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// options is the one declaration of every option of `herald serve`: its
// flag, environment variables, file key, default, help and checks. The
// flags, the environment, the YAML and TOML file, Default, --help and the
// table in docs/configuration.md (Markdown) all come from it. Adding an
// option is one entry here plus its field in Config and its use.
//
// Each entry is made by a constructor of its kind (stringOpt, intOpt, ...)
// and may be refined with its methods: env (other variables), key (another
// file key), check (a check of the value alone; checks across options are
// in Validate).
func options() []option {
	return []option{
		stringOpt("addr", "ADDR", ":8080", `listen address for HTTP and WebSocket; if no flag, env or file sets it, PORT gives ":$PORT"`,
			func(c *Config) *string { return &c.Addr }),
		stringOpt("ws-path", "PATH", "/ws", "WebSocket endpoint path (e.g. /api/socket)",
			func(c *Config) *string { return &c.WSPath }).check(func(c *Config) error { return validateWSPath(c.WSPath) }),
		stringOpt("conformance-echo-path", "PATH", "", "off unless set: a WebSocket path that echoes every text and binary message unchanged, over /ws's stack and settings, for conformance suites such as Autobahn|Testsuite (docs/conformance.md); a warning is logged when it is on",
			func(c *Config) *string { return &c.ConformanceEchoPath }).check(validateEchoPath),
		stringOpt("sse-path", "PATH", "/sse", "Server-Sent Events stream path; commands are POSTed to PATH/command; empty turns SSE off (docs/sse.md)",
			func(c *Config) *string { return &c.SSEPath }).check(validateSSEPath),
		listOpt("api-key", "KEY", "", "key for the server API (/api/*, /call), 16+ characters; repeat the flag for several keys. None: the API answers 403",
			func(c *Config) *[]string { return &c.APIKeys }).repeated().env("HERALD_API_KEYS", "HERALD_API_KEY").key("api_keys"),
		stringOpt("jwt-secret", "SECRET", "", "HS256 secret for client tokens: at least 32 random bytes (shorter ones are accepted with a warning)",
			func(c *Config) *string { return &c.JWTSecret }),
		stringOpt("jwt-public-key", "FILE", "", "PEM file with an RSA or ECDSA public key for RS256/ES256 client tokens",
			func(c *Config) *string { return &c.JWTPublicKeyFile }),
		boolOpt("insecure-query-auth", false, "accept ?userId=&role=&org= without a token; development only",
			func(c *Config) *bool { return &c.InsecureQueryAuth }),
		listOpt("allowed-origins", "LIST", "", `Origins allowed to connect; "*" allows any; if none, the Origin host must equal Host`,
			func(c *Config) *[]string { return &c.AllowedOrigins }),
		bytesOpt("max-message-bytes", "1MiB", "largest incoming WebSocket message; a larger one closes the connection with 1009",
			func(c *Config) *int64 { return &c.MaxMessageBytes }).check(positive("max-message-bytes", func(c *Config) int64 { return c.MaxMessageBytes })),
		durationOpt("ping-interval", "30s", "how often the server pings each connection",
			func(c *Config) *time.Duration { return &c.PingInterval }).check(positive("ping-interval", func(c *Config) time.Duration { return c.PingInterval })),
		durationOpt("pong-timeout", "60s", "close a connection that has been silent for this long (more than ping-interval)",
			func(c *Config) *time.Duration { return &c.PongTimeout }),
		bytesOpt("client-queue-bytes", "1MiB", "per-connection send queue; a client past it is closed as a slow consumer (4008). It always holds one largest message (max-message-bytes + 64KiB)",
			func(c *Config) *int64 { return &c.ClientQueueBytes }).check(positive("client-queue-bytes", func(c *Config) int64 { return c.ClientQueueBytes })),
		bytesOpt("history-max-bytes", "512MiB", "history kept by all channels together (memory broker); past it a channel drops its oldest, and recovery reports the gap",
			func(c *Config) *int64 { return &c.HistoryMaxBytes }).check(positive("history-max-bytes", func(c *Config) int64 { return c.HistoryMaxBytes })),
		bytesOpt("max-queued-bytes", "0", "what the whole process holds for clients (send queues, replies, messages being received, idempotency keys); past it the holder is refused. 0: a quarter of the machine's (or cgroup's) memory",
			func(c *Config) *int64 { return &c.MaxQueuedBytes }).check(atLeast("max-queued-bytes", 0, " (0: derived from memory)", func(c *Config) int64 { return c.MaxQueuedBytes })),
		bytesOpt("max-user-queued-bytes", "0", "the same for all connections of one user together. 0: a sixteenth of max-queued-bytes, between 32MiB and 256MiB",
			func(c *Config) *int64 { return &c.MaxUserQueuedBytes }).check(atLeast("max-user-queued-bytes", 0, " (0: derived from max-queued-bytes)", func(c *Config) int64 { return c.MaxUserQueuedBytes })),
		intOpt("max-subscriptions", "1000", "most channels one connection may subscribe to",
			func(c *Config) *int { return &c.MaxSubscriptions }).check(atLeast("max-subscriptions", 1, "", func(c *Config) int { return c.MaxSubscriptions })),
		intOpt("max-connections", "0", "most WebSocket connections open at once; past it an upgrade gets 503. 0: the descriptor limit less a sixteenth (at least 64), kept for the API, metrics and files",
			func(c *Config) *int { return &c.MaxConnections }).check(atLeast("max-connections", 0, " (0 derives it from the descriptor limit)", func(c *Config) int { return c.MaxConnections })),
		intOpt("max-user-connections", "0", "most WebSocket connections one user may have open at once; past it an upgrade gets 429. 0: no limit",
			func(c *Config) *int { return &c.MaxUserConnections }).check(atLeast("max-user-connections", 0, " (0: no limit)", func(c *Config) int { return c.MaxUserConnections })),
		floatOpt("rate-limit", "RATE", "100", "client commands per second per connection; 0 disables rate limiting",
			func(c *Config) *float64 { return &c.RateLimit }),
		intOpt("rate-burst", "200", "rate limiter burst",
			func(c *Config) *int { return &c.RateBurst }),
		intOpt("rate-limit-strikes", "50", "close a connection (4029) after this many consecutive rate-limited commands",
			func(c *Config) *int { return &c.RateLimitStrikes }).check(atLeast("rate-limit-strikes", 1, "", func(c *Config) int { return c.RateLimitStrikes })),
		boolOpt("compression", true, "negotiate permessage-deflate with clients that offer it; each large message is compressed once for all",
			func(c *Config) *bool { return &c.Compression }),
		bytesOpt("compression-threshold", "512", "smallest message sent compressed",
			func(c *Config) *int64 { return &c.CompressionThreshold }).check(func(c *Config) error {
			if c.CompressionThreshold < 0 {
				return fmt.Errorf("invalid compression-threshold %d: must not be negative", c.CompressionThreshold)
			}
			return nil
		}),
		boolOpt("io-uring", true, "on Linux 5.19+, write a publication to many connections with one io_uring submission (falls back to one writev each, with a warning, where io_uring is unavailable)",
			func(c *Config) *bool { return &c.IOUring }),
		durationOpt("idempotency-window", "5m", "how long a publish idempotencyKey is remembered per channel; 0 disables",
			func(c *Config) *time.Duration { return &c.IdempotencyWindow }).check(func(c *Config) error {
			if c.IdempotencyWindow < 0 {
				return fmt.Errorf("invalid idempotency-window %s: must not be negative", c.IdempotencyWindow)
			}
			return nil
		}),
		stringOpt("broker", "NAME", "memory", "where channel offsets, history and idempotency keys live: memory (this process) or redis (shared by every node on one Redis and prefix; publications reach all of them)",
			func(c *Config) *string { return &c.Broker }).check(checkBroker),
		stringOpt("redis-url", "URL", "redis://127.0.0.1:6379/0", "Redis server of the redis broker: redis://[:PASSWORD@]HOST:PORT/DB, rediss:// for TLS, or unix:///PATH; the password is never printed, but a flag is visible to ps: prefer the environment",
			func(c *Config) *string { return &c.RedisURL }).shown(func(c *Config) string { return strconv.Quote(RedactURL(c.RedisURL)) }),
		stringOpt("redis-prefix", "PREFIX", "herald", "prefix of every Redis key and pub/sub channel (no ':' or spaces); nodes with the same prefix form one cluster",
			func(c *Config) *string { return &c.RedisPrefix }),
		durationOpt("shutdown-timeout", "10s", "time allowed for graceful shutdown",
			func(c *Config) *time.Duration { return &c.ShutdownTimeout }).check(positive("shutdown-timeout", func(c *Config) time.Duration { return c.ShutdownTimeout })),
		stringOpt("debug-addr", "ADDR", "", "serve /debug/pprof on this separate address (e.g. 127.0.0.1:6060; keep it on loopback); empty serves nothing",
			func(c *Config) *string { return &c.DebugAddr }).check(func(c *Config) error {
			if c.DebugAddr == "" {
				return nil
			}
			if err := checkListenAddr(c.DebugAddr); err != nil {
				return fmt.Errorf("invalid debug-addr %q: %w", c.DebugAddr, err)
			}
			return nil
		}),
		stringOpt("socketio-path", "PATH", "/socket.io/", "Socket.IO endpoint path (e.g. /api/socket/ as the seed's clients use); empty turns Socket.IO off",
			func(c *Config) *string { return &c.SocketIOPath }).check(func(c *Config) error { return validateSocketIOPath(c) }),
		boolOpt("conformance-socketio", false, "answer at /socket.io/ and /engine.io/ as the Socket.IO protocol test suites' reference server, with no authentication; for conformance runs only, never in production",
			func(c *Config) *bool { return &c.ConformanceSocketIO }),
		stringOpt("log-format", "FORMAT", "text", "log format: text or json",
			func(c *Config) *string { return &c.LogFormat }).check(oneOf("log-format", func(c *Config) string { return c.LogFormat }, "text", "json")),
		stringOpt("log-level", "LEVEL", "info", "log level: debug, info, warn or error",
			func(c *Config) *string { return &c.LogLevel }).check(oneOf("log-level", func(c *Config) string { return c.LogLevel }, "debug", "info", "warn", "error")),
	}
}

// checkBroker checks broker, and the redis options when it is redis.
func checkBroker(c *Config) error {
	switch c.Broker {
	case "memory":
	case "redis":
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			var ue *url.Error
			if errors.As(err, &ue) { // it quotes the URL, password and all
				err = errors.New("not a URL (percent-encode special characters in the password)")
			}
			return fmt.Errorf("invalid redis-url %q: %v", RedactURL(c.RedisURL), err)
		}
		if c.RedisPrefix == "" || strings.ContainsAny(c.RedisPrefix, ": \t\r\n") {
			return fmt.Errorf("invalid redis-prefix %q: want a non-empty word without spaces or ':' (prefixes a and a:m would share keys)", c.RedisPrefix)
		}
	default:
		return fmt.Errorf("invalid broker %q: want memory or redis", c.Broker)
	}
	return nil
}

func positive[T int64 | time.Duration](name string, v func(*Config) T) func(*Config) error {
	return func(c *Config) error {
		if x := v(c); x <= 0 {
			return fmt.Errorf("invalid %s %v: must be greater than 0", name, x)
		}
		return nil
	}
}

func atLeast[T int | int64](name string, least T, note string, v func(*Config) T) func(*Config) error {
	return func(c *Config) error {
		x := v(c)
		switch {
		case x >= least:
			return nil
		case least == 0:
			return fmt.Errorf("invalid %s %d: must be >= 0%s", name, x, note)
		default:
			return fmt.Errorf("invalid %s %d: must be at least %d%s", name, x, least, note)
		}
	}
}

func oneOf(name string, v func(*Config) string, allowed ...string) func(*Config) error {
	return func(c *Config) error {
		x := v(c)
		for _, a := range allowed {
			if x == a {
				return nil
			}
		}
		want := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
		return fmt.Errorf("invalid %s %q: want %s", name, x, want)
	}
}

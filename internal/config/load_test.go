package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// env returns a getenv function backed by m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes content to name in a fresh temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func boolPtr(b bool) *bool { return &b }

func TestLoadDefaults(t *testing.T) {
	var out bytes.Buffer
	got, err := Load(nil, env(nil), &out)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Load() = %+v, want Default() = %+v", got, want)
	}
	if out.Len() != 0 {
		t.Errorf("Load wrote %q, want nothing", out.String())
	}
}

func TestLoadPrecedence(t *testing.T) {
	file := writeFile(t, "herald.yaml", `
addr: ":1111"
ws_path: /file
jwt_secret: file-secret
ping_interval: 11s
rate_limit: 11
log_level: debug
`)
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{
			name: "file only",
			args: []string{"--config", file},
			check: func(t *testing.T, c Config) {
				want := Default()
				want.Addr, want.WSPath, want.JWTSecret = ":1111", "/file", "file-secret"
				want.PingInterval, want.RateLimit, want.LogLevel = 11*time.Second, 11, "debug"
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got %+v\nwant %+v", c, want)
				}
			},
		},
		{
			name: "env over file",
			args: []string{"--config", file},
			env: map[string]string{
				"HERALD_ADDR": ":2222", "HERALD_WS_PATH": "/env", "HERALD_PING_INTERVAL": "22s",
				"HERALD_RATE_LIMIT": "0", "HERALD_LOG_FORMAT": "json",
			},
			check: func(t *testing.T, c Config) {
				if c.Addr != ":2222" || c.WSPath != "/env" || c.PingInterval != 22*time.Second ||
					c.RateLimit != 0 || c.LogFormat != "json" {
					t.Errorf("env did not override file: %+v", c)
				}
				if c.JWTSecret != "file-secret" || c.LogLevel != "debug" {
					t.Errorf("file values not set by env were lost: %+v", c)
				}
			},
		},
		{
			name: "flags over env over file",
			args: []string{"--config", file, "--addr", ":3333", "-ping-interval=33s", "--log-level", "warn"},
			env: map[string]string{
				"HERALD_ADDR": ":2222", "HERALD_WS_PATH": "/env", "HERALD_PING_INTERVAL": "22s",
				"HERALD_LOG_LEVEL": "error",
			},
			check: func(t *testing.T, c Config) {
				if c.Addr != ":3333" || c.PingInterval != 33*time.Second || c.LogLevel != "warn" {
					t.Errorf("flags did not win: %+v", c)
				}
				if c.WSPath != "/env" || c.JWTSecret != "file-secret" || c.RateLimit != 11 {
					t.Errorf("lower layers lost: %+v", c)
				}
			},
		},
		{
			name: "last use of a flag wins",
			args: []string{"--ws-path", "/a", "--ws-path", "/b"},
			check: func(t *testing.T, c Config) {
				if c.WSPath != "/b" {
					t.Errorf("WSPath = %q, want /b", c.WSPath)
				}
			},
		},
		{
			name: "empty env var counts as unset",
			args: []string{"--config", file},
			env:  map[string]string{"HERALD_WS_PATH": "", "HERALD_API_KEYS": ""},
			check: func(t *testing.T, c Config) {
				if c.WSPath != "/file" {
					t.Errorf("WSPath = %q, want /file", c.WSPath)
				}
			},
		},
		{
			name: "HERALD_CONFIG names the file",
			env:  map[string]string{"HERALD_CONFIG": file},
			check: func(t *testing.T, c Config) {
				if c.Addr != ":1111" {
					t.Errorf("Addr = %q, want :1111 from HERALD_CONFIG file", c.Addr)
				}
			},
		},
		{
			name: "--config beats HERALD_CONFIG",
			args: []string{"--config", file},
			env:  map[string]string{"HERALD_CONFIG": "/nonexistent/herald.yaml"},
			check: func(t *testing.T, c Config) {
				if c.Addr != ":1111" {
					t.Errorf("Addr = %q, want :1111", c.Addr)
				}
			},
		},
		{
			name: "every setting by flag",
			args: []string{
				"--addr", "127.0.0.1:9", "--ws-path", "/socket", "--sse-path", "/events", "--api-key", "0123456789abcdef",
				"--jwt-secret", "s", "--jwt-public-key", "/k.pem", "--insecure-query-auth",
				"--allowed-origins", "https://a.example, https://b.example", "--max-message-bytes", "64KB",
				"--ping-interval", "5s", "--pong-timeout", "12s", "--client-queue-bytes", "2MiB", "--history-max-bytes", "1GiB",
				"--max-subscriptions", "7", "--max-connections", "900", "--max-user-connections", "9",
				"--rate-limit", "2.5", "--rate-burst", "3",
				"--rate-limit-strikes", "4", "--io-uring=false", "--broker", "redis", "--redis-url", "redis://:pw@10.0.0.1:6380/2",
				"--redis-prefix", "c1", "--shutdown-timeout", "1m", "--log-format", "json",
				"--log-level", "error",
			},
			check: func(t *testing.T, c Config) {
				want := Config{
					Addr: "127.0.0.1:9", WSPath: "/socket", SSEPath: "/events", APIKeys: []string{"0123456789abcdef"},
					JWTSecret: "s", JWTPublicKeyFile: "/k.pem", InsecureQueryAuth: true,
					AllowedOrigins:  []string{"https://a.example", "https://b.example"},
					MaxMessageBytes: 64 << 10, PingInterval: 5 * time.Second, PongTimeout: 12 * time.Second,
					ClientQueueBytes: 2 << 20, HistoryMaxBytes: 1 << 30, MaxSubscriptions: 7, MaxConnections: 900, MaxUserConnections: 9, RateLimit: 2.5, RateBurst: 3,
					RateLimitStrikes: 4, IdempotencyWindow: 5 * time.Minute, Compression: true, CompressionThreshold: 512, ShutdownTimeout: time.Minute, LogFormat: "json", LogLevel: "error", SocketIOPath: "/socket.io/",
					Broker: "redis", RedisURL: "redis://:pw@10.0.0.1:6380/2", RedisPrefix: "c1",
				}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got  %+v\nwant %+v", c, want)
				}
			},
		},
		{
			name: "every setting by env",
			env: map[string]string{
				"HERALD_ADDR": "127.0.0.1:9", "HERALD_WS_PATH": "/socket", "HERALD_SSE_PATH": "/events", "HERALD_API_KEYS": "0123456789abcdef",
				"HERALD_JWT_SECRET": "s", "HERALD_JWT_PUBLIC_KEY": "/k.pem", "HERALD_INSECURE_QUERY_AUTH": "true",
				"HERALD_ALLOWED_ORIGINS": "*", "HERALD_MAX_MESSAGE_BYTES": "512KiB",
				"HERALD_PING_INTERVAL": "5s", "HERALD_PONG_TIMEOUT": "12s", "HERALD_CLIENT_QUEUE_BYTES": "4096", "HERALD_HISTORY_MAX_BYTES": "64MiB",
				"HERALD_MAX_SUBSCRIPTIONS": "7", "HERALD_MAX_CONNECTIONS": "900", "HERALD_MAX_USER_CONNECTIONS": "9",
				"HERALD_RATE_LIMIT": "2.5", "HERALD_RATE_BURST": "3",
				"HERALD_RATE_LIMIT_STRIKES": "4", "HERALD_IO_URING": "false", "HERALD_SHUTDOWN_TIMEOUT": "1m", "HERALD_LOG_FORMAT": "json",
				"HERALD_BROKER": "redis", "HERALD_REDIS_URL": "unix:///run/redis.sock", "HERALD_REDIS_PREFIX": "c2",
				"HERALD_LOG_LEVEL": "error",
			},
			check: func(t *testing.T, c Config) {
				want := Config{
					Addr: "127.0.0.1:9", WSPath: "/socket", SSEPath: "/events", APIKeys: []string{"0123456789abcdef"},
					JWTSecret: "s", JWTPublicKeyFile: "/k.pem", InsecureQueryAuth: true,
					AllowedOrigins:  []string{"*"},
					MaxMessageBytes: 512 << 10, PingInterval: 5 * time.Second, PongTimeout: 12 * time.Second,
					ClientQueueBytes: 4096, HistoryMaxBytes: 64 << 20, MaxSubscriptions: 7, MaxConnections: 900, MaxUserConnections: 9, RateLimit: 2.5, RateBurst: 3,
					RateLimitStrikes: 4, IdempotencyWindow: 5 * time.Minute, Compression: true, CompressionThreshold: 512, ShutdownTimeout: time.Minute, LogFormat: "json", LogLevel: "error", SocketIOPath: "/socket.io/",
					Broker: "redis", RedisURL: "unix:///run/redis.sock", RedisPrefix: "c2",
				}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got  %+v\nwant %+v", c, want)
				}
			},
		},
		{
			name: "bool flag can be turned off over env",
			args: []string{"--insecure-query-auth=false"},
			env:  map[string]string{"HERALD_INSECURE_QUERY_AUTH": "1"},
			check: func(t *testing.T, c Config) {
				if c.InsecureQueryAuth {
					t.Error("InsecureQueryAuth = true, want false")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadPORT(t *testing.T) {
	fileWithAddr := writeFile(t, "a.toml", `addr = ":1111"`)
	fileWithoutAddr := writeFile(t, "b.toml", `ws_path = "/x"`)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, ":8080"},
		{"PORT", nil, map[string]string{"PORT": "9000"}, ":9000"},
		{"PORT with file without addr", []string{"--config", fileWithoutAddr}, map[string]string{"PORT": "9000"}, ":9000"},
		{"file addr beats PORT", []string{"--config", fileWithAddr}, map[string]string{"PORT": "9000"}, ":1111"},
		{"HERALD_ADDR beats PORT", nil, map[string]string{"PORT": "9000", "HERALD_ADDR": ":2222"}, ":2222"},
		{"flag beats PORT", []string{"--addr", ":3333"}, map[string]string{"PORT": "9000"}, ":3333"},
		{"empty PORT ignored", nil, map[string]string{"PORT": ""}, ":8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Addr != tt.want {
				t.Errorf("Addr = %q, want %q", c.Addr, tt.want)
			}
		})
	}
}

func TestLoadAPIKeys(t *testing.T) {
	const (
		k1 = "key-one-0123456789"
		k2 = "key-two-0123456789"
		k3 = "key-three-0123456789"
	)
	file := writeFile(t, "keys.yaml", "api_keys: ["+k3+"]\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"none", nil, nil, nil},
		{"one flag", []string{"--api-key", k1}, nil, []string{k1}},
		{"repeated flag", []string{"--api-key", k1, "--api-key=" + k2}, nil, []string{k1, k2}},
		{"flag value is not split", []string{"--api-key", "a,b"}, nil, []string{"a,b"}},
		{"HERALD_API_KEYS list", nil, map[string]string{"HERALD_API_KEYS": k1 + ", " + k2 + ",,"}, []string{k1, k2}},
		{"HERALD_API_KEY", nil, map[string]string{"HERALD_API_KEY": k1}, []string{k1}},
		{"both env vars", nil, map[string]string{"HERALD_API_KEYS": k1, "HERALD_API_KEY": k2}, []string{k1, k2}},
		{"file", []string{"--config", file}, nil, []string{k3}},
		{"env replaces file", []string{"--config", file}, map[string]string{"HERALD_API_KEYS": k1}, []string{k1}},
		{"flags replace env and file", []string{"--config", file, "--api-key", k2}, map[string]string{"HERALD_API_KEYS": k1}, []string{k2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(c.APIKeys, tt.want) {
				t.Errorf("APIKeys = %q, want %q", c.APIKeys, tt.want)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	want := Default()
	want.Addr = "0.0.0.0:7000"
	want.WSPath = "/realtime"
	want.APIKeys = []string{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"}
	want.JWTSecret = "secret"
	want.InsecureQueryAuth = true
	want.AllowedOrigins = []string{"https://app.example"}
	want.MaxMessageBytes = 512 << 10
	want.ClientQueueBytes = 4096
	want.HistoryMaxBytes = 2 << 30
	want.PingInterval = 15 * time.Second
	want.PongTimeout = time.Minute + 30*time.Second
	want.ShutdownTimeout = 500 * time.Millisecond
	want.RateLimit = 0
	want.MaxConnections = 5000
	want.MaxUserConnections = 20
	want.Namespaces = []Namespace{
		{Prefix: "chat", Publish: boolPtr(false), Echo: true},
		{Prefix: "feed"},
		{Prefix: ""},
	}

	tests := []struct {
		name, file, content string
	}{
		{"yaml", "herald.yaml", `
# comment
addr: "0.0.0.0:7000"
ws_path: /realtime
api_keys: [aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb]
jwt_secret: secret
insecure_query_auth: true
allowed_origins:
  - https://app.example
max_message_bytes: 512KiB
client_queue_bytes: 4096
history_max_bytes: 2GiB
ping_interval: 15s
pong_timeout: 1m30s
shutdown_timeout: 500ms
rate_limit: 0
max_connections: 5000
max_user_connections: 20
namespaces:
  - {prefix: chat, publish: false, echo: true}
  - prefix: feed
  - prefix: ""
`},
		{"yml extension", "herald.YML", `
addr: "0.0.0.0:7000"
ws_path: /realtime
api_keys: [aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb]
jwt_secret: secret
insecure_query_auth: true
allowed_origins: [https://app.example]
max_message_bytes: "512 KiB"
client_queue_bytes: "4096"
history_max_bytes: "2 GiB"
ping_interval: 15s
pong_timeout: 90s
shutdown_timeout: 0.5s
rate_limit: 0.0
max_connections: 5000
max_user_connections: 20
namespaces: [{prefix: chat, publish: false, echo: true}, {prefix: feed}, {prefix: ""}]
`},
		{"toml", "herald.toml", `
# comment
addr = "0.0.0.0:7000"
ws_path = "/realtime"
api_keys = ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]
jwt_secret = "secret"
insecure_query_auth = true
allowed_origins = ["https://app.example"]
max_message_bytes = "512KiB"
client_queue_bytes = 4096
history_max_bytes = "2GiB"
ping_interval = "15s"
pong_timeout = "1m30s"
shutdown_timeout = "500ms"
rate_limit = 0
max_connections = 5000
max_user_connections = 20

[[namespaces]]
prefix = "chat"
publish = false
echo = true

[[namespaces]]
prefix = "feed"

[[namespaces]]
prefix = ""
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.file, tt.content)
			got, err := Load([]string{"--config", path}, env(nil), io.Discard)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestLoadEmptyFile(t *testing.T) {
	for _, name := range []string{"empty.yaml", "empty.toml"} {
		path := writeFile(t, name, "")
		got, err := Load([]string{"--config", path}, env(nil), io.Discard)
		if err != nil {
			t.Fatalf("%s: Load: %v", name, err)
		}
		if !reflect.DeepEqual(got, Default()) {
			t.Errorf("%s: got %+v, want defaults", name, got)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    string // file name; content in body; used as --config when set
		body    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "unknown flag", args: []string{"--bogus"}, wantErr: "flag provided but not defined: -bogus"},
		{name: "positional argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
		{name: "bad duration flag", args: []string{"--ping-interval", "soon"}, wantErr: `invalid value "soon" for flag -ping-interval`},
		{name: "duration without unit", args: []string{"--pong-timeout", "30"}, wantErr: "-pong-timeout"},
		{name: "bad size flag", args: []string{"--max-message-bytes", "1XB"}, wantErr: `invalid value "1XB" for flag -max-message-bytes`},
		{name: "negative size flag", args: []string{"--client-queue-bytes", "-1"}, wantErr: "-client-queue-bytes"},
		{name: "bad int flag", args: []string{"--rate-burst", "lots"}, wantErr: "-rate-burst"},
		{name: "bad float flag", args: []string{"--rate-limit", "Inf"}, wantErr: "-rate-limit"},
		{name: "bad bool flag", args: []string{"--insecure-query-auth=maybe"}, wantErr: "-insecure-query-auth"},
		{name: "missing flag value", args: []string{"--addr"}, wantErr: "flag needs an argument: -addr"},
		{name: "bad duration env", env: map[string]string{"HERALD_PING_INTERVAL": "soon"}, wantErr: `invalid value "soon" for HERALD_PING_INTERVAL`},
		{name: "bad size env", env: map[string]string{"HERALD_MAX_MESSAGE_BYTES": "big"}, wantErr: "HERALD_MAX_MESSAGE_BYTES"},
		{name: "bad bool env", env: map[string]string{"HERALD_INSECURE_QUERY_AUTH": "yes please"}, wantErr: "HERALD_INSECURE_QUERY_AUTH"},
		{name: "bad int env", env: map[string]string{"HERALD_MAX_SUBSCRIPTIONS": "1e3"}, wantErr: "HERALD_MAX_SUBSCRIPTIONS"},
		{name: "missing file", args: []string{"--config", "/nonexistent/herald.yaml"}, wantErr: "reading config file"},
		{name: "missing file from env", env: map[string]string{"HERALD_CONFIG": "/nonexistent/herald.toml"}, wantErr: "reading config file"},
		{name: "unsupported extension", file: "herald.json", body: "{}", wantErr: `unsupported extension ".json"`},
		{name: "yaml unknown key", file: "c.yaml", body: "addr: x\nbogus: 1\n", wantErr: `line 2: unknown key "bogus"`},
		{name: "yaml unknown namespace key", file: "c.yaml", body: "namespaces:\n  - prefix: a\n    publsh: true\n", wantErr: `unknown key "publsh"`},
		{name: "yaml bad duration", file: "c.yaml", body: "ping_interval: soon\n", wantErr: `line 1: invalid duration "soon"`},
		{name: "yaml duration without unit", file: "c.yaml", body: "shutdown_timeout: 10\n", wantErr: `invalid duration "10"`},
		{name: "yaml bad size", file: "c.yaml", body: "max_message_bytes: 1 megabyte\n", wantErr: `invalid byte size "1 megabyte"`},
		{name: "yaml wrong type", file: "c.yaml", body: "rate_burst: lots\n", wantErr: "line 1"},
		{name: "yaml fraction for a whole number", file: "c.yaml", body: "addr: x\nmax_connections: 1.5\n", wantErr: "line 2: max_connections: want a whole number, got 1.5"},
		{name: "yaml fraction in a namespace", file: "c.yaml", body: "namespaces:\n  - prefix: a\n    history_size: 2.5\n", wantErr: "line 3: history_size: want a whole number, got 2.5"},
		{name: "toml fraction for a whole number", file: "c.toml", body: "rate_burst = 1.5\n", wantErr: "rate_burst"},
		{name: "yaml syntax", file: "c.yaml", body: "addr: [\n", wantErr: "c.yaml"},
		// yaml.v3 counts its parser's lines from 0: each of these named the line
		// before the one where the unfinished construct begins.
		{name: "yaml syntax line", file: "c.yaml", body: "addr: x\n- ws_path\n", wantErr: "line 2: did not find expected key"},
		{name: "yaml syntax line in a flow", file: "c.yaml", body: "addr: x\nallowed_origins: [a, b\nws_path: /x\n", wantErr: "line 2: did not find expected ',' or ']'"},
		{name: "yaml syntax line in a block", file: "c.yaml", body: "allowed_origins:\n  - a\n  ws_path: /x\n", wantErr: "line 2: did not find expected '-' indicator"},
		{name: "yaml scanner line", file: "c.yaml", body: "addr: x\nws_path: a: b\n", wantErr: "line 2: mapping values are not allowed"},
		{name: "yaml two documents", file: "c.yaml", body: "addr: x\n---\naddr: y\n", wantErr: "more than one YAML document"},
		{name: "toml unknown key", file: "c.toml", body: "addr = \"x\"\nbogus = 1\n", wantErr: `unknown key "bogus"`},
		{name: "toml unknown namespace key", file: "c.toml", body: "[[namespaces]]\nprefix = \"a\"\npublsh = true\n", wantErr: `unknown key "namespaces.publsh"`},
		{name: "toml bad duration", file: "c.toml", body: "ping_interval = \"soon\"\n", wantErr: `invalid duration "soon"`},
		{name: "toml duration as integer", file: "c.toml", body: "ping_interval = 30\n", wantErr: "invalid duration 30"},
		{name: "toml bad size", file: "c.toml", body: "client_queue_bytes = \"lots\"\n", wantErr: `invalid byte size "lots"`},
		{name: "toml syntax", file: "c.toml", body: "addr = \n", wantErr: "c.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file, tt.body)}, args...)
			}
			var out bytes.Buffer
			_, err := Load(args, env(tt.env), &out)
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tt.wantErr)
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Fatalf("Load returned flag.ErrHelp, want a real error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
			if out.Len() != 0 {
				t.Errorf("Load printed %q; errors should only be returned", out.String())
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	// Every flag herald serve must have, listed independently of the settings table.
	allFlags := []string{
		"config", "addr", "ws-path", "conformance-echo-path", "sse-path", "api-key", "jwt-secret", "jwt-public-key",
		"insecure-query-auth", "allowed-origins", "max-message-bytes", "ping-interval",
		"pong-timeout", "client-queue-bytes", "history-max-bytes", "max-queued-bytes", "max-user-queued-bytes", "max-subscriptions", "max-connections", "max-user-connections", "rate-limit",
		"rate-burst", "rate-limit-strikes", "compression", "compression-threshold", "io-uring", "idempotency-window", "broker", "redis-url", "redis-prefix", "shutdown-timeout", "debug-addr", "socketio-path", "conformance-socketio", "log-format", "log-level",
	}
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Load([]string{"--addr", ":1", arg}, env(nil), &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want flag.ErrHelp", err)
			}
			help := out.String()
			for _, want := range []string{"Usage: herald serve [flags]", "HERALD_", "--config", "(default 1MiB;", "(default 30s;"} {
				if !strings.Contains(help, want) {
					t.Errorf("help lacks %q", want)
				}
			}
			for _, name := range allFlags {
				if !strings.Contains(help, "--"+name+" ") {
					t.Errorf("help lacks flag --%s", name)
				}
				envVar := "HERALD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
				if !strings.Contains(help, envVar) {
					t.Errorf("help lacks env var %s", envVar)
				}
			}
			if !strings.Contains(help, "HERALD_API_KEYS") {
				t.Error("help lacks HERALD_API_KEYS")
			}
			// Every flag line states its default and env var.
			flagLines := 0
			for line := range strings.SplitSeq(help, "\n") {
				if strings.HasPrefix(line, "  --") {
					flagLines++
					if !strings.Contains(line, "(default ") || !strings.Contains(line, "env HERALD_") {
						t.Errorf("flag line lacks default or env: %q", line)
					}
				}
			}
			if flagLines != len(allFlags) {
				t.Errorf("help has %d flag lines, want %d", flagLines, len(allFlags))
			}
		})
	}
}

// TestOptionsCoverConfig: every field of Config but Namespaces is set by
// exactly one option, and each option sets exactly one field.
func TestOptionsCoverConfig(t *testing.T) {
	ct := reflect.TypeFor[Config]()
	owner := make(map[string]string)
	for _, o := range options() {
		var zero, c Config
		switch {
		case o.list != nil:
			*o.list(&c) = []string{"x"}
		case o.isBool:
			// Set both ways: one of them differs from the zero value.
			if err := o.set(&c, "true"); err != nil {
				t.Fatal(err)
			}
		default:
			if err := o.set(&c, "7s"); err != nil {
				if err := o.set(&c, "7"); err != nil {
					t.Fatalf("%s: %v", o.name, err)
				}
			}
		}
		cv, zv := reflect.ValueOf(c), reflect.ValueOf(zero)
		changed := 0
		for i := range ct.NumField() {
			if !reflect.DeepEqual(cv.Field(i).Interface(), zv.Field(i).Interface()) {
				changed++
				if prev, ok := owner[ct.Field(i).Name]; ok {
					t.Errorf("field %s set by both %s and %s", ct.Field(i).Name, prev, o.name)
				}
				owner[ct.Field(i).Name] = o.name
			}
		}
		if changed != 1 {
			t.Errorf("option %s sets %d fields, want 1", o.name, changed)
		}
	}
	for f := range ct.Fields() {
		if _, ok := owner[f.Name]; !ok && f.Name != "Namespaces" {
			t.Errorf("Config.%s has no option", f.Name)
		}
	}
}

// TestOptionsUnique: no two options share a flag, an environment variable
// or a file key.
func TestOptionsUnique(t *testing.T) {
	seen := make(map[string]string)
	for _, o := range options() {
		for _, k := range append([]string{"flag " + o.name, "key " + o.file}, o.envs...) {
			if prev, ok := seen[k]; ok {
				t.Errorf("%s used by %s and %s", k, prev, o.name)
			}
			seen[k] = o.name
		}
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"1048576", 1 << 20, false},
		{"100B", 100, false},
		{"64KB", 64 << 10, false},
		{"64kb", 64 << 10, false},
		{"512KiB", 512 << 10, false},
		{"8K", 8 << 10, false},
		{"1MiB", 1 << 20, false},
		{"2MB", 2 << 20, false},
		{" 3 mib ", 3 << 20, false},
		{"1GiB", 1 << 30, false},
		{"", 0, true},
		{"KiB", 0, true},
		{"-1", 0, true},
		{"1.5MiB", 0, true},
		{"1TiB", 0, true},
		{"99999999999999999999", 0, true},
		{"9999999999GiB", 0, true},
	}
	for _, tt := range tests {
		got, err := parseBytes(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 100: "100", 1 << 10: "1KiB", 1536: "1536", 1 << 20: "1MiB", 3 << 30: "3GiB"} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	pem := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(pem, []byte("not parsed here"), 0o600); err != nil {
		t.Fatal(err)
	}

	valid := func() Config {
		c := Default()
		c.JWTSecret = "secret"
		return c
	}
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantErr string // "" means valid
	}{
		{"valid", func(c *Config) {}, ""},
		{"public key only", func(c *Config) { c.JWTSecret, c.JWTPublicKeyFile = "", pem }, ""},
		{"insecure query auth only", func(c *Config) { c.JWTSecret, c.InsecureQueryAuth = "", true }, ""},
		{"rate limit disabled with zero burst", func(c *Config) { c.RateLimit, c.RateBurst = 0, 0 }, ""},
		{"api keys and namespaces", func(c *Config) {
			c.APIKeys = []string{"0123456789abcdef", "another-long-key-here"}
			c.Namespaces = []Namespace{{Prefix: ""}, {Prefix: "chat"}, {Prefix: "a_b-c:d.e@f"}}
		}, ""},
		{"ws path like reserved", func(c *Config) { c.WSPath = "/apiary" }, ""},

		{"empty addr", func(c *Config) { c.Addr = "" }, "addr is empty"},
		{"ws path without slash", func(c *Config) { c.WSPath = "ws" }, `invalid ws-path "ws": must start with "/"`},
		{"empty ws path", func(c *Config) { c.WSPath = "" }, "invalid ws-path"},
		{"ws path with query", func(c *Config) { c.WSPath = "/ws?x=1" }, "invalid ws-path"},
		{"sse off", func(c *Config) { c.SSEPath = "" }, ""},
		{"sse path without slash", func(c *Config) { c.SSEPath = "sse" }, `invalid sse-path "sse": must start with "/"`},
		{"sse path is the ws path", func(c *Config) { c.SSEPath = "/ws" }, "invalid sse-path \"/ws\": conflicts with ws-path"},
		{"sse commands at the ws path", func(c *Config) { c.WSPath, c.SSEPath = "/x/command", "/x" }, "conflicts with ws-path"},
		{"sse path reserved", func(c *Config) { c.SSEPath = "/metrics" }, "conflicts with herald's /metrics endpoint"},
		{"sse path under socketio", func(c *Config) { c.SSEPath = "/socket.io/sse" }, "conflicts with socketio-path"},
		{"ws path /api", func(c *Config) { c.WSPath = "/api" }, "conflicts with herald's /api endpoint"},
		{"ws path under /api is free", func(c *Config) { c.WSPath = "/api/socket" }, ""},
		{"ws path on an API endpoint", func(c *Config) { c.WSPath = "/api/publish" }, "conflicts with herald's /api/publish endpoint"},
		{"ws path under healthz", func(c *Config) { c.WSPath = "/healthz/ws" }, "conflicts with herald's /healthz endpoint"},
		{"ws path /call", func(c *Config) { c.WSPath = "/call" }, "/call endpoint"},
		{"echo path off", func(c *Config) { c.ConformanceEchoPath = "" }, ""},
		{"echo path", func(c *Config) { c.ConformanceEchoPath = "/echo" }, ""},
		{"echo path on the ws path", func(c *Config) { c.ConformanceEchoPath = "/ws" }, `invalid conformance-echo-path "/ws": it is the ws-path`},
		{"echo path on an endpoint", func(c *Config) { c.ConformanceEchoPath = "/metrics" }, "invalid conformance-echo-path \"/metrics\": conflicts with herald's /metrics endpoint"},
		{"echo path without slash", func(c *Config) { c.ConformanceEchoPath = "echo" }, "must start with"},
		{"ws path /metrics", func(c *Config) { c.WSPath = "/metrics" }, "/metrics endpoint"},
		{"ws path /healthz", func(c *Config) { c.WSPath = "/healthz/" }, "/healthz endpoint"},
		{"zero max message", func(c *Config) { c.MaxMessageBytes = 0 }, "invalid max-message-bytes 0"},
		{"negative max message", func(c *Config) { c.MaxMessageBytes = -1 }, "invalid max-message-bytes"},
		{"zero client queue", func(c *Config) { c.ClientQueueBytes = 0 }, "invalid client-queue-bytes 0"},
		{"zero history budget", func(c *Config) { c.HistoryMaxBytes = 0 }, "invalid history-max-bytes 0"},
		{"zero ping interval", func(c *Config) { c.PingInterval = 0 }, "invalid ping-interval 0s"},
		{"pong equal to ping", func(c *Config) { c.PongTimeout = c.PingInterval }, "invalid pong-timeout 30s: must be greater than ping-interval (30s)"},
		{"pong below ping", func(c *Config) { c.PongTimeout = time.Second }, "invalid pong-timeout"},
		{"zero shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "invalid shutdown-timeout"},
		{"bad log format", func(c *Config) { c.LogFormat = "xml" }, `invalid log-format "xml"`},
		{"bad log level", func(c *Config) { c.LogLevel = "verbose" }, `invalid log-level "verbose"`},
		{"negative rate limit", func(c *Config) { c.RateLimit = -1 }, "invalid rate-limit -1"},
		{"zero burst", func(c *Config) { c.RateBurst = 0 }, "invalid rate-burst 0"},
		{"zero strikes", func(c *Config) { c.RateLimitStrikes = 0 }, "invalid rate-limit-strikes 0"},
		{"zero max subscriptions", func(c *Config) { c.MaxSubscriptions = 0 }, "invalid max-subscriptions 0"},
		{"addr without port", func(c *Config) { c.Addr = "nonsense" }, `invalid addr "nonsense": want HOST:PORT or :PORT`},
		{"addr with a bad port", func(c *Config) { c.Addr = ":99999" }, `invalid addr ":99999": port "99999"`},
		{"debug addr without port", func(c *Config) { c.DebugAddr = "localhost" }, `invalid debug-addr "localhost"`},
		{"negative max connections", func(c *Config) { c.MaxConnections = -1 }, "invalid max-connections -1"},
		{"negative max user connections", func(c *Config) { c.MaxUserConnections = -2 }, "invalid max-user-connections -2"},
		{"negative max queued bytes", func(c *Config) { c.MaxQueuedBytes = -1 }, "invalid max-queued-bytes -1"},
		{"negative max user queued bytes", func(c *Config) { c.MaxUserQueuedBytes = -1 }, "invalid max-user-queued-bytes -1"},
		{"no auth", func(c *Config) { c.JWTSecret = "" },
			"no authentication configured: set --jwt-secret, --jwt-public-key or --insecure-query-auth"},
		{"missing public key", func(c *Config) { c.JWTPublicKeyFile = filepath.Join(dir, "missing.pem") }, "invalid jwt-public-key"},
		{"public key is a directory", func(c *Config) { c.JWTPublicKeyFile = dir }, "is a directory"},
		{"short api key", func(c *Config) { c.APIKeys = []string{"0123456789abcdef", "short"} },
			"invalid api-key #2: too short (5 characters); API keys must be at least 16 characters"},
		{"empty api key", func(c *Config) { c.APIKeys = []string{""} }, "invalid api-key #1: too short"},
		{"bad namespace prefix", func(c *Config) { c.Namespaces = []Namespace{{Prefix: "chat room"}} }, `invalid namespaces[0] prefix "chat room"`},
		{"namespace prefix with trailing colon", func(c *Config) { c.Namespaces = []Namespace{{Prefix: "chat:"}} }, `invalid namespaces[0] prefix "chat:"`},
		{"long namespace prefix", func(c *Config) { c.Namespaces = []Namespace{{Prefix: strings.Repeat("a", 201)}} }, "invalid namespaces[0] prefix"},
		{"duplicate namespace", func(c *Config) { c.Namespaces = []Namespace{{Prefix: "a"}, {Prefix: "b"}, {Prefix: "a"}} }, `prefix "a" appears more than once`},
		{"duplicate default namespace", func(c *Config) { c.Namespaces = []Namespace{{Prefix: ""}, {Prefix: ""}} }, `prefix "" appears more than once`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
		})
	}
}

func TestValidateNeverEchoesAPIKey(t *testing.T) {
	c := Default()
	c.JWTSecret = "x"
	c.APIKeys = []string{"s3cr3t-but-short"[:12]}
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), c.APIKeys[0]) {
		t.Errorf("Validate() = %v; want an error that does not contain the key", err)
	}
}

// TestYAMLIntKeysComplete: every whole-number key of the file is checked for
// fractions, which yaml.v3 would cut.
func TestYAMLIntKeysComplete(t *testing.T) {
	keys := yamlIntKeys()
	for _, o := range options() {
		var c Config
		isInt := o.set != nil && o.set(&c, "7") == nil && o.set(&c, "7.5") != nil && o.set(&c, "7KiB") != nil && o.set(&c, "7s") != nil
		if isInt != keys[o.file] {
			t.Errorf("option %s (key %q, kind %s): in yamlIntKeys %v", o.name, o.file, o.kind, keys[o.file])
		}
	}
	for f := range reflect.TypeFor[Namespace]().Fields() {
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if isInt := f.Type.Kind() == reflect.Int; isInt != keys[key] {
			t.Errorf("Namespace.%s (yaml %q, %s): in yamlIntKeys %v", f.Name, key, f.Type, keys[key])
		}
	}
}

func TestBrokerSettings(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--broker", "redis"}, ""},
		{[]string{"--broker", "redis", "--redis-url", "unix:///tmp/r.sock"}, ""},
		{[]string{"--broker", "kafka"}, `invalid broker "kafka": want memory or redis`},
		{[]string{"--broker", "redis", "--redis-url", "http://:secret@h/"}, `invalid redis-url "http://:xxxxx@h/"`},
		{[]string{"--broker", "redis", "--redis-prefix", "a b"}, `invalid redis-prefix "a b"`},
		{[]string{"--broker", "memory", "--redis-url", "nonsense"}, ""}, // unused
	} {
		c, err := Load(append([]string{"--addr", "127.0.0.1:1", "--insecure-query-auth"}, tc.args...), func(string) string { return "" }, io.Discard)
		if err == nil {
			err = c.Validate()
		}
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), ":secret@") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// A redis-url that net/url cannot parse still must not show its password:
// the README promises it never appears in help or logs, and the startup
// error is printed to stderr (and collected with the logs). Passwords with
// '%' or a space are common; Validate redacts the URL itself to
// "(malformed)" but then appends redis.ParseURL's error, which quotes the
// whole URL.
func TestRedisURLErrorHidesPassword(t *testing.T) {
	for _, u := range []string{
		"redis://:s3cr%t-pw@10.0.0.1:6379/0",       // '%' not percent-encoded
		"redis://:s3cr t-pw@10.0.0.1:6379/0",       // a space
		"redis://:s3crt-pw@10.0.0.1:port/0",        // a typo in the port
		"rediss://app:s3crt-pw@redis.internal:x/0", // the same over TLS
	} {
		c, err := Load([]string{"--addr", "127.0.0.1:1", "--insecure-query-auth", "--broker", "redis", "--redis-url", u},
			func(string) string { return "" }, io.Discard)
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("%s: accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "s3cr") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

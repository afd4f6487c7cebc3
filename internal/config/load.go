package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Load builds the configuration for `herald serve` from, in increasing
// precedence: Default(), the optional config file (--config PATH or
// HERALD_CONFIG; .yaml/.yml or .toml by extension), HERALD_* environment
// variables, then command-line flags.
//
// getenv is os.Getenv in production (injected for tests); an environment
// variable set to the empty string counts as unset. Usage/help goes to out.
// It returns flag.ErrHelp when -h/--help was given (after printing help to
// out). Any other problem (unknown flag, bad value, unreadable or invalid
// file) is returned as a one-line error and nothing is printed, so the caller
// reports it exactly once.
//
// The listen address is special: when no layer sets addr (an empty addr
// counts as unset), the PORT environment variable gives ":"+PORT, and
// otherwise Default().Addr is used.
//
// Load does not call Validate; the caller does.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	settings := settings()

	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	// The flag package prints parse errors (and the usage) to its output; the
	// error is returned instead, and help is printed below, so keep it quiet.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	var configPath string
	fs.StringVar(&configPath, "config", "", "config file")
	values := make([]*flagValue, len(settings))
	for i := range settings {
		values[i] = &flagValue{s: &settings[i]}
		fs.Var(values[i], settings[i].name, settings[i].usage)
	}

	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		writeHelp(out, settings)
		return Config{}, flag.ErrHelp
	}
	if err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (herald serve takes only flags)", fs.Arg(0))
	}

	cfg := Default()
	cfg.Addr = "" // resolved last, so that PORT only applies when nothing else set it

	// --config wins over HERALD_CONFIG even when empty: --config "" means no file.
	configFlagSet := false
	fs.Visit(func(f *flag.Flag) { configFlagSet = configFlagSet || f.Name == "config" })
	if !configFlagSet {
		configPath = getenv("HERALD_CONFIG")
	}
	if configPath != "" {
		if err := loadFile(configPath, &cfg); err != nil {
			return Config{}, err
		}
	}

	for i := range settings {
		if err := settings[i].applyEnv(&cfg, getenv); err != nil {
			return Config{}, err
		}
	}

	for i, v := range values {
		if err := settings[i].applyFlag(&cfg, v.values); err != nil {
			return Config{}, err
		}
	}

	if cfg.Addr == "" {
		if port := getenv("PORT"); port != "" {
			cfg.Addr = ":" + port
		} else {
			cfg.Addr = Default().Addr
		}
	}
	return cfg, nil
}

// setting describes one option that can be given as a flag and an
// environment variable. Exactly one of set (scalar options) and list (list
// options) is non-nil.
type setting struct {
	name   string   // flag name, e.g. "ws-path"
	arg    string   // placeholder for the value in help, e.g. "PATH"; "" for booleans
	usage  string   // one-line description, without default or env
	env    []string // environment variables, in order
	isBool bool     // boolean flag: --name alone means true

	// set parses v into the option's field of c.
	set func(c *Config, v string) error

	// list returns the option's field; the environment variable holds a
	// comma-separated list.
	list func(c *Config) *[]string
	// repeat makes every use of the flag add one element. Otherwise the flag
	// takes a comma-separated list and the last use wins.
	repeat bool

	// show formats the option's value in c, for the help text.
	show func(c *Config) string
}

// applyEnv applies the setting's environment variables, if set, to c.
func (s *setting) applyEnv(c *Config, getenv func(string) string) error {
	if s.list != nil {
		var items []string
		found := false
		for _, name := range s.env {
			if v := getenv(name); v != "" {
				found = true
				items = append(items, splitList(v)...)
			}
		}
		if found {
			*s.list(c) = items
		}
		return nil
	}
	for _, name := range s.env {
		v := getenv(name)
		if v == "" {
			continue
		}
		if err := s.set(c, v); err != nil {
			return fmt.Errorf("invalid value %q for %s: %v", v, name, err)
		}
	}
	return nil
}

// applyFlag applies the values given on the command line (in order; none if
// the flag was not used) to c. A list flag replaces the list from lower layers.
func (s *setting) applyFlag(c *Config, values []string) error {
	if len(values) == 0 {
		return nil
	}
	last := values[len(values)-1]
	switch {
	case s.list != nil && s.repeat:
		*s.list(c) = append([]string(nil), values...)
	case s.list != nil:
		*s.list(c) = splitList(last)
	default:
		if err := s.set(c, last); err != nil {
			return fmt.Errorf("invalid value %q for flag --%s: %v", last, s.name, err)
		}
	}
	return nil
}

// flagValue is the flag.Value registered for a setting. It checks each value
// as it is parsed and records it; Load applies the values after the file and
// the environment.
type flagValue struct {
	s      *setting
	values []string
}

func (v *flagValue) String() string { return "" }

func (v *flagValue) IsBoolFlag() bool { return v.s != nil && v.s.isBool }

func (v *flagValue) Set(s string) error {
	if v.s.set != nil {
		var scratch Config
		if err := v.s.set(&scratch, s); err != nil {
			return err
		}
	}
	v.values = append(v.values, s)
	return nil
}

// settings returns every option settable by flag and environment, in the
// order they are listed in the help.
func settings() []setting {
	return []setting{
		stringSetting("addr", "ADDR", `listen address for HTTP and WebSocket; if unset, PORT gives ":$PORT"`,
			func(c *Config) *string { return &c.Addr }),
		stringSetting("ws-path", "PATH", "WebSocket endpoint path",
			func(c *Config) *string { return &c.WSPath }),
		{
			name:   "api-key",
			arg:    "KEY",
			usage:  "key for the server API (/api/*, /call), 16+ characters; repeat the flag for several keys",
			env:    []string{"HERALD_API_KEYS", "HERALD_API_KEY"},
			list:   func(c *Config) *[]string { return &c.APIKeys },
			repeat: true,
			show:   func(c *Config) string { return showList(c.APIKeys) },
		},
		stringSetting("jwt-secret", "SECRET", "HS256 secret for client tokens: at least 32 random bytes (shorter ones are accepted with a warning)",
			func(c *Config) *string { return &c.JWTSecret }),
		stringSetting("jwt-public-key", "FILE", "PEM file with an RSA or ECDSA public key for RS256/ES256 client tokens",
			func(c *Config) *string { return &c.JWTPublicKeyFile }),
		boolSetting("insecure-query-auth", "accept ?userId=&role=&org= without a token; development only",
			func(c *Config) *bool { return &c.InsecureQueryAuth }),
		listSetting("allowed-origins", "LIST", `Origins allowed to connect; "*" allows any; if none, the Origin host must equal Host`,
			func(c *Config) *[]string { return &c.AllowedOrigins }),
		bytesSetting("max-message-bytes", "largest incoming WebSocket message",
			func(c *Config) *int64 { return &c.MaxMessageBytes }),
		durationSetting("ping-interval", "how often the server pings each connection",
			func(c *Config) *time.Duration { return &c.PingInterval }),
		durationSetting("pong-timeout", "close a connection that has been silent for this long",
			func(c *Config) *time.Duration { return &c.PongTimeout }),
		bytesSetting("client-queue-bytes", "per-connection send queue; a client past it is closed as a slow consumer",
			func(c *Config) *int64 { return &c.ClientQueueBytes }),
		bytesSetting("history-max-bytes", "history kept by all channels together; past it a channel drops its oldest, and recovery reports the gap",
			func(c *Config) *int64 { return &c.HistoryMaxBytes }),
		intSetting("max-subscriptions", "most channels one connection may subscribe to",
			func(c *Config) *int { return &c.MaxSubscriptions }),
		intSetting("max-connections", "most WebSocket connections open at once; past it an upgrade gets 503. 0: the descriptor limit less a sixteenth (at least 64), kept for the API, metrics and files",
			func(c *Config) *int { return &c.MaxConnections }),
		intSetting("max-user-connections", "most WebSocket connections one user may have open at once; past it an upgrade gets 429. 0: no limit",
			func(c *Config) *int { return &c.MaxUserConnections }),
		floatSetting("rate-limit", "RATE", "client commands per second per connection; 0 disables rate limiting",
			func(c *Config) *float64 { return &c.RateLimit }),
		intSetting("rate-burst", "rate limiter burst",
			func(c *Config) *int { return &c.RateBurst }),
		intSetting("rate-limit-strikes", "close a connection after this many consecutive rate-limited commands",
			func(c *Config) *int { return &c.RateLimitStrikes }),
		boolSetting("compression", "negotiate permessage-deflate with clients that offer it; each large message is compressed once for all",
			func(c *Config) *bool { return &c.Compression }),
		bytesSetting("compression-threshold", "smallest message sent compressed",
			func(c *Config) *int64 { return &c.CompressionThreshold }),
		boolSetting("io-uring", "on Linux 5.19+, write a publication to many connections with one io_uring submission (falls back to one writev each where io_uring is unavailable)",
			func(c *Config) *bool { return &c.IOUring }),
		durationSetting("idempotency-window", "how long a publish idempotencyKey is remembered per channel; 0 disables",
			func(c *Config) *time.Duration { return &c.IdempotencyWindow }),
		stringSetting("broker", "NAME", "where channel offsets, history and idempotency keys live: memory (this process) or redis (shared by every node on one Redis; publications reach all of them)",
			func(c *Config) *string { return &c.Broker }),
		{
			name:  "redis-url",
			arg:   "URL",
			usage: "Redis server of the redis broker: redis://[:PASSWORD@]HOST:PORT/DB, rediss:// for TLS, or unix:///PATH",
			env:   []string{envName("redis-url")},
			set:   func(c *Config, v string) error { c.RedisURL = v; return nil },
			show:  func(c *Config) string { return strconv.Quote(RedactURL(c.RedisURL)) },
		},
		stringSetting("redis-prefix", "PREFIX", "prefix of every Redis key and of the pub/sub channel; nodes with the same prefix form one cluster",
			func(c *Config) *string { return &c.RedisPrefix }),
		durationSetting("shutdown-timeout", "time allowed for graceful shutdown",
			func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
		stringSetting("debug-addr", "ADDR", "serve /debug/pprof on this separate address (e.g. 127.0.0.1:6060); empty serves nothing",
			func(c *Config) *string { return &c.DebugAddr }),
		stringSetting("log-format", "FORMAT", "log format: text or json",
			func(c *Config) *string { return &c.LogFormat }),
		stringSetting("log-level", "LEVEL", "log level: debug, info, warn or error",
			func(c *Config) *string { return &c.LogLevel }),
	}
}

// RedactURL hides a URL's password, for help and logs.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(malformed)"
	}
	return u.Redacted()
}

// envName is the environment variable for a flag: HERALD_ plus the flag name
// in upper case with dashes as underscores.
func envName(flagName string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func stringSetting(name, arg, usage string, field func(*Config) *string) setting {
	return setting{
		name: name, arg: arg, usage: usage, env: []string{envName(name)},
		set: func(c *Config, v string) error { *field(c) = v; return nil },
		show: func(c *Config) string {
			if v := *field(c); v != "" {
				return strconv.Quote(v)
			}
			return "none"
		},
	}
}

func listSetting(name, arg, usage string, field func(*Config) *[]string) setting {
	return setting{
		name: name, arg: arg, usage: usage, env: []string{envName(name)},
		list: field,
		show: func(c *Config) string { return showList(*field(c)) },
	}
}

func boolSetting(name, usage string, field func(*Config) *bool) setting {
	return setting{
		name: name, usage: usage, env: []string{envName(name)}, isBool: true,
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("want true or false")
			}
			*field(c) = b
			return nil
		},
		show: func(c *Config) string { return strconv.FormatBool(*field(c)) },
	}
}

func intSetting(name, usage string, field func(*Config) *int) setting {
	return setting{
		name: name, arg: "N", usage: usage, env: []string{envName(name)},
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return errors.New("want an integer")
			}
			*field(c) = n
			return nil
		},
		show: func(c *Config) string { return strconv.Itoa(*field(c)) },
	}
}

func floatSetting(name, arg, usage string, field func(*Config) *float64) setting {
	return setting{
		name: name, arg: arg, usage: usage, env: []string{envName(name)},
		set: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return errors.New("want a number")
			}
			*field(c) = f
			return nil
		},
		show: func(c *Config) string { return strconv.FormatFloat(*field(c), 'g', -1, 64) },
	}
}

func durationSetting(name, usage string, field func(*Config) *time.Duration) setting {
	return setting{
		name: name, arg: "DURATION", usage: usage, env: []string{envName(name)},
		set: func(c *Config, v string) error {
			d, err := parseDuration(v)
			if err != nil {
				return err
			}
			*field(c) = d
			return nil
		},
		show: func(c *Config) string { return field(c).String() },
	}
}

func bytesSetting(name, usage string, field func(*Config) *int64) setting {
	return setting{
		name: name, arg: "SIZE", usage: usage, env: []string{envName(name)},
		set: func(c *Config, v string) error {
			n, err := parseBytes(v)
			if err != nil {
				return err
			}
			*field(c) = n
			return nil
		},
		show: func(c *Config) string { return formatBytes(*field(c)) },
	}
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty elements.
func splitList(s string) []string {
	var items []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

func showList(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strconv.Quote(strings.Join(items, ","))
}

// parseDuration parses a duration such as "30s" or "1m30s" (time.ParseDuration).
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, errors.New(`want a duration such as "500ms", "30s" or "1m30s"`)
	}
	return d, nil
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// parseBytes parses a byte size: a non-negative integer, optionally followed
// by a unit. Units are case-insensitive and binary: B; K, KB, KiB = 1024;
// M, MB, MiB = 1024²; G, GB, GiB = 1024³. "64KB" is therefore 65536 bytes.
func parseBytes(s string) (int64, error) {
	errSize := errors.New(`want a byte size such as "1048576", "512KiB" or "1MiB"`)
	s = strings.TrimSpace(s)
	digits := 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if digits == 0 {
		return 0, errSize
	}
	n, err := strconv.ParseInt(s[:digits], 10, 64)
	if err != nil {
		return 0, errSize
	}
	var unit int64
	switch strings.ToLower(strings.TrimSpace(s[digits:])) {
	case "", "b":
		unit = 1
	case "k", "kb", "kib":
		unit = kib
	case "m", "mb", "mib":
		unit = mib
	case "g", "gb", "gib":
		unit = gib
	default:
		return 0, errSize
	}
	if n > math.MaxInt64/unit {
		return 0, errors.New("byte size too large")
	}
	return n * unit, nil
}

// formatBytes formats n with the largest binary unit that divides it.
func formatBytes(n int64) string {
	switch {
	case n != 0 && n%gib == 0:
		return strconv.FormatInt(n/gib, 10) + "GiB"
	case n != 0 && n%mib == 0:
		return strconv.FormatInt(n/mib, 10) + "MiB"
	case n != 0 && n%kib == 0:
		return strconv.FormatInt(n/kib, 10) + "KiB"
	default:
		return strconv.FormatInt(n, 10)
	}
}

const helpHeader = `Usage: herald serve [flags]

Runs the herald WebSocket server. Every option can be set by a flag, by a
HERALD_* environment variable or in an optional YAML (.yaml, .yml) or TOML
(.toml) file named by --config, whose keys are the flag names with
underscores (ws_path, api_keys, ...); flags override environment variables,
which override the file. Channel namespaces can only be set in the file.
Sizes are bytes, optionally with a binary unit: 512KiB, 1MiB, 64KB (K, KB
and KiB all mean 1024). Durations look like 500ms, 30s or 1m30s.

Flags:
`

// writeHelp prints the usage text for `herald serve`.
func writeHelp(out io.Writer, settings []setting) {
	io.WriteString(out, helpHeader)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  --config PATH\tconfig file, YAML or TOML by extension (default none; env HERALD_CONFIG)\n")
	def := Default()
	for _, s := range settings {
		flagName := "--" + s.name
		if s.arg != "" {
			flagName += " " + s.arg
		}
		env := strings.Join(s.env, " or ")
		if s.list != nil {
			env += ", comma-separated"
		}
		fmt.Fprintf(tw, "  %s\t%s (default %s; env %s)\n", flagName, s.usage, s.show(&def), env)
	}
	tw.Flush()
}

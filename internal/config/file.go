package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"
)

// loadFile overlays the YAML or TOML file at path onto c. Keys absent from
// the file leave c unchanged; unknown keys are an error.
func loadFile(path string, c *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	fc := fileConfigFrom(c)
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		err = decodeYAML(data, &fc)
	case ".toml":
		err = decodeTOML(data, &fc)
	default:
		return fmt.Errorf("config file %s: unsupported extension %q (want .yaml, .yml or .toml)", path, ext)
	}
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	fc.apply(c)
	return nil
}

// yamlUnknownField matches yaml.v3's message for a key with no struct field.
var yamlUnknownField = regexp.MustCompile(`^(line \d+): field (\S+) not found in type \S+$`)

// yamlIntKeys are the keys whose values are whole numbers. yaml.v3 decodes
// a float such as 1.5 into an int by cutting it (TOML refuses it), so these
// are checked first.
var yamlIntKeys = map[string]bool{
	"max_subscriptions": true, "max_connections": true, "max_user_connections": true,
	"rate_burst": true, "rate_limit_strikes": true, "history_size": true,
}

// checkYAMLInts reports the first of yamlIntKeys, at any depth, whose value
// is not an integer.
func checkYAMLInts(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if yamlIntKeys[k.Value] && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!float" {
				return fmt.Errorf("line %d: %s: want a whole number, got %s", v.Line, k.Value, v.Value)
			}
		}
	}
	for _, c := range n.Content {
		if err := checkYAMLInts(c); err != nil {
			return err
		}
	}
	return nil
}

func decodeYAML(data []byte, fc *fileConfig) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err == nil {
		if err := checkYAMLInts(&doc); err != nil {
			return err
		}
	} // else the decoding below reports it
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(fc)
	if errors.Is(err, io.EOF) { // empty file
		return nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		// yaml.v3 reports one error per line, mentioning Go type names;
		// make it one line in the file's terms.
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			if sub := yamlUnknownField.FindStringSubmatch(m); sub != nil {
				m = fmt.Sprintf("%s: unknown key %q", sub[1], sub[2])
			}
			msgs[i] = m
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	if err != nil {
		return err
	}
	var extra yaml.Node
	if dec.Decode(&extra) != io.EOF {
		return errors.New("more than one YAML document")
	}
	return nil
}

func decodeTOML(data []byte, fc *fileConfig) error {
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(fc)
	if err != nil {
		return err
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = fmt.Sprintf("%q", k.String())
		}
		sort.Strings(keys)
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	return nil
}

// fileConfig mirrors Config (same keys) for decoding files: durations and
// byte sizes are read from human-readable strings.
type fileConfig struct {
	Addr                 string      `yaml:"addr" toml:"addr"`
	WSPath               string      `yaml:"ws_path" toml:"ws_path"`
	APIKeys              []string    `yaml:"api_keys" toml:"api_keys"`
	JWTSecret            string      `yaml:"jwt_secret" toml:"jwt_secret"`
	JWTPublicKeyFile     string      `yaml:"jwt_public_key" toml:"jwt_public_key"`
	InsecureQueryAuth    bool        `yaml:"insecure_query_auth" toml:"insecure_query_auth"`
	AllowedOrigins       []string    `yaml:"allowed_origins" toml:"allowed_origins"`
	MaxMessageBytes      byteSize    `yaml:"max_message_bytes" toml:"max_message_bytes"`
	PingInterval         Duration    `yaml:"ping_interval" toml:"ping_interval"`
	PongTimeout          Duration    `yaml:"pong_timeout" toml:"pong_timeout"`
	ClientQueueBytes     byteSize    `yaml:"client_queue_bytes" toml:"client_queue_bytes"`
	HistoryMaxBytes      byteSize    `yaml:"history_max_bytes" toml:"history_max_bytes"`
	MaxSubscriptions     int         `yaml:"max_subscriptions" toml:"max_subscriptions"`
	MaxConnections       int         `yaml:"max_connections" toml:"max_connections"`
	MaxUserConnections   int         `yaml:"max_user_connections" toml:"max_user_connections"`
	RateLimit            float64     `yaml:"rate_limit" toml:"rate_limit"`
	RateBurst            int         `yaml:"rate_burst" toml:"rate_burst"`
	RateLimitStrikes     int         `yaml:"rate_limit_strikes" toml:"rate_limit_strikes"`
	Compression          bool        `yaml:"compression" toml:"compression"`
	CompressionThreshold byteSize    `yaml:"compression_threshold" toml:"compression_threshold"`
	IOUring              bool        `yaml:"io_uring" toml:"io_uring"`
	IdempotencyWindow    Duration    `yaml:"idempotency_window" toml:"idempotency_window"`
	Broker               string      `yaml:"broker" toml:"broker"`
	RedisURL             string      `yaml:"redis_url" toml:"redis_url"`
	RedisPrefix          string      `yaml:"redis_prefix" toml:"redis_prefix"`
	ShutdownTimeout      Duration    `yaml:"shutdown_timeout" toml:"shutdown_timeout"`
	DebugAddr            string      `yaml:"debug_addr" toml:"debug_addr"`
	LogFormat            string      `yaml:"log_format" toml:"log_format"`
	LogLevel             string      `yaml:"log_level" toml:"log_level"`
	Namespaces           []Namespace `yaml:"namespaces" toml:"namespaces"`
}

func fileConfigFrom(c *Config) fileConfig {
	return fileConfig{
		Addr:                 c.Addr,
		WSPath:               c.WSPath,
		APIKeys:              c.APIKeys,
		JWTSecret:            c.JWTSecret,
		JWTPublicKeyFile:     c.JWTPublicKeyFile,
		InsecureQueryAuth:    c.InsecureQueryAuth,
		AllowedOrigins:       c.AllowedOrigins,
		MaxMessageBytes:      byteSize(c.MaxMessageBytes),
		PingInterval:         Duration(c.PingInterval),
		PongTimeout:          Duration(c.PongTimeout),
		ClientQueueBytes:     byteSize(c.ClientQueueBytes),
		HistoryMaxBytes:      byteSize(c.HistoryMaxBytes),
		MaxSubscriptions:     c.MaxSubscriptions,
		MaxConnections:       c.MaxConnections,
		MaxUserConnections:   c.MaxUserConnections,
		RateLimit:            c.RateLimit,
		RateBurst:            c.RateBurst,
		RateLimitStrikes:     c.RateLimitStrikes,
		IdempotencyWindow:    Duration(c.IdempotencyWindow),
		Compression:          c.Compression,
		CompressionThreshold: byteSize(c.CompressionThreshold),
		IOUring:              c.IOUring,
		Broker:               c.Broker,
		RedisURL:             c.RedisURL,
		RedisPrefix:          c.RedisPrefix,
		ShutdownTimeout:      Duration(c.ShutdownTimeout),
		DebugAddr:            c.DebugAddr,
		LogFormat:            c.LogFormat,
		LogLevel:             c.LogLevel,
		Namespaces:           c.Namespaces,
	}
}

func (fc *fileConfig) apply(c *Config) {
	*c = Config{
		Addr:                 fc.Addr,
		WSPath:               fc.WSPath,
		APIKeys:              fc.APIKeys,
		JWTSecret:            fc.JWTSecret,
		JWTPublicKeyFile:     fc.JWTPublicKeyFile,
		InsecureQueryAuth:    fc.InsecureQueryAuth,
		AllowedOrigins:       fc.AllowedOrigins,
		MaxMessageBytes:      int64(fc.MaxMessageBytes),
		PingInterval:         time.Duration(fc.PingInterval),
		PongTimeout:          time.Duration(fc.PongTimeout),
		ClientQueueBytes:     int64(fc.ClientQueueBytes),
		HistoryMaxBytes:      int64(fc.HistoryMaxBytes),
		MaxSubscriptions:     fc.MaxSubscriptions,
		MaxConnections:       fc.MaxConnections,
		MaxUserConnections:   fc.MaxUserConnections,
		RateLimit:            fc.RateLimit,
		RateBurst:            fc.RateBurst,
		RateLimitStrikes:     fc.RateLimitStrikes,
		IdempotencyWindow:    time.Duration(fc.IdempotencyWindow),
		Compression:          fc.Compression,
		CompressionThreshold: int64(fc.CompressionThreshold),
		IOUring:              fc.IOUring,
		Broker:               fc.Broker,
		RedisURL:             fc.RedisURL,
		RedisPrefix:          fc.RedisPrefix,
		ShutdownTimeout:      time.Duration(fc.ShutdownTimeout),
		DebugAddr:            fc.DebugAddr,
		LogFormat:            fc.LogFormat,
		LogLevel:             fc.LogLevel,
		Namespaces:           fc.Namespaces,
	}
}

// Duration is a time.Duration written in files as a string such as "30s".
// Bare numbers are rejected rather than read as nanoseconds.
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as \"30s\"", n.Line)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q: %v", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

func (d *Duration) UnmarshalTOML(data any) error {
	s, ok := data.(string)
	if !ok {
		return fmt.Errorf("invalid duration %v: want a string such as \"30s\"", data)
	}
	v, err := parseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %v", s, err)
	}
	*d = Duration(v)
	return nil
}

// byteSize is a size in bytes, written in files as an integer or as a string
// with a unit such as "512KiB" (see parseBytes).
type byteSize int64

func (b *byteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a byte size such as 1048576 or \"1MiB\"", n.Line)
	}
	v, err := parseBytes(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid byte size %q: %v", n.Line, n.Value, err)
	}
	*b = byteSize(v)
	return nil
}

func (b *byteSize) UnmarshalTOML(data any) error {
	switch v := data.(type) {
	case int64:
		*b = byteSize(v)
		return nil
	case string:
		n, err := parseBytes(v)
		if err != nil {
			return fmt.Errorf("invalid byte size %q: %v", v, err)
		}
		*b = byteSize(n)
		return nil
	default:
		return fmt.Errorf("invalid byte size %v: want an integer or a string such as \"1MiB\"", data)
	}
}

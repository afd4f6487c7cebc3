package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"

	"github.com/herald-rt/herald/internal/protocol"
)

// MinAPIKeyLen is the shortest API key accepted.
const MinAPIKeyLen = 16

// MinJWTSecretLen is the shortest HS256 secret RFC 7518 §3.2 allows (the
// hash's 256 bits). A shorter one is accepted — tests and local benchmarks
// use one-letter secrets — and the server warns at startup: anyone holding
// a single token can guess a short secret offline, then forge tokens for
// any user of any tenant.
const MinJWTSecretLen = 32

// Validate checks a Config and returns a one-line, human-readable error naming
// the bad setting (by its flag name). It checks that the JWT public key file
// is readable but does not parse it.
func (c *Config) Validate() error {
	if c.Addr == "" {
		return errors.New("addr is empty: set --addr, HERALD_ADDR or PORT")
	}
	if err := checkListenAddr(c.Addr); err != nil {
		return fmt.Errorf("invalid addr %q: %w", c.Addr, err)
	}
	for _, o := range options() {
		if o.checkFn != nil {
			if err := o.checkFn(c); err != nil {
				return err
			}
		}
	}
	if c.PongTimeout <= c.PingInterval {
		return fmt.Errorf("invalid pong-timeout %s: must be greater than ping-interval (%s)", c.PongTimeout, c.PingInterval)
	}
	if !(c.RateLimit >= 0) || math.IsInf(c.RateLimit, 0) {
		return fmt.Errorf("invalid rate-limit %g: must be a finite number >= 0 (0 disables)", c.RateLimit)
	}
	if c.RateLimit > 0 && c.RateBurst < 1 {
		return fmt.Errorf("invalid rate-burst %d: must be at least 1 when rate-limit is set", c.RateBurst)
	}
	if c.JWTSecret == "" && c.JWTPublicKeyFile == "" && !c.InsecureQueryAuth {
		return errors.New("no authentication configured: set --jwt-secret, --jwt-public-key or --insecure-query-auth")
	}
	if c.JWTPublicKeyFile != "" {
		if err := checkReadableFile(c.JWTPublicKeyFile); err != nil {
			return fmt.Errorf("invalid jwt-public-key: %w", err)
		}
	}
	for i, key := range c.APIKeys {
		if len(key) < MinAPIKeyLen {
			// Never echo the key itself: it may be a real secret.
			return fmt.Errorf("invalid api-key #%d: too short (%d characters); API keys must be at least %d characters", i+1, len(key), MinAPIKeyLen)
		}
	}
	return validateNamespaces(c.Namespaces)
}

// ReservedPaths are the HTTP paths herald serves besides the WebSocket path.
var ReservedPaths = []string{"/api", "/api/", "/api/publish", "/api/broadcast", "/api/send", "/api/batch",
	"/api/disconnect", "/api/stats", "/api/channels", "/api/history", "/api/presence", "/call", "/metrics", "/healthz"}

func validateWSPath(p string) error { return validatePath("ws-path", p) }

// validateEchoPath checks --conformance-echo-path: unset, or a path of its
// own.
func validateEchoPath(c *Config) error {
	if c.ConformanceEchoPath == "" {
		return nil
	}
	if c.ConformanceEchoPath == c.WSPath {
		return fmt.Errorf("invalid conformance-echo-path %q: it is the ws-path", c.ConformanceEchoPath)
	}
	return validatePath("conformance-echo-path", c.ConformanceEchoPath)
}

// validateSSEPath checks --sse-path: empty (SSE off), or a path of its own
// (its command endpoint is the path + "/command").
func validateSSEPath(c *Config) error {
	if c.SSEPath == "" {
		return nil
	}
	if err := validatePath("sse-path", c.SSEPath); err != nil {
		return err
	}
	for _, other := range []struct{ name, path string }{{"ws-path", c.WSPath}, {"conformance-echo-path", c.ConformanceEchoPath}} {
		if other.path != "" && (c.SSEPath == other.path || c.SSEPath+"/command" == other.path) {
			return fmt.Errorf("invalid sse-path %q: conflicts with %s", c.SSEPath, other.name)
		}
	}
	if p := c.SocketIOPath; p != "" && strings.HasPrefix(c.SSEPath+"/", strings.TrimSuffix(p, "/")+"/") {
		return fmt.Errorf("invalid sse-path %q: conflicts with socketio-path", c.SSEPath)
	}
	return nil
}

func validatePath(option, p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("invalid %s %q: must start with \"/\"", option, p)
	}
	if strings.ContainsAny(p, "?# \t\r\n") {
		return fmt.Errorf("invalid %s %q: must be a plain URL path", option, p)
	}
	// Paths served by herald itself. Other paths under /api/ are free (the
	// seed-003 clients connect to /api/socket).
	for _, r := range ReservedPaths {
		if p == r || (!strings.HasPrefix(r, "/api") && strings.HasPrefix(p, r+"/")) {
			return fmt.Errorf("invalid %s %q: conflicts with herald's %s endpoint", option, p, r)
		}
	}
	return nil
}

// validateSocketIOPath checks --socketio-path: empty (off), or a plain path
// that neither is nor contains the WebSocket path or herald's endpoints.
func validateSocketIOPath(c *Config) error {
	p := c.SocketIOPath
	if p == "" {
		return nil
	}
	if err := validateWSPath(p); err != nil {
		return errors.New(strings.Replace(err.Error(), "ws-path", "socketio-path", 1))
	}
	trimmed := strings.TrimSuffix(p, "/")
	if trimmed == "" || trimmed == strings.TrimSuffix(c.WSPath, "/") {
		return fmt.Errorf("invalid socketio-path %q: conflicts with ws-path %q", p, c.WSPath)
	}
	return nil
}

func checkReadableFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}

// MaxHistorySize bounds a namespace's history_size.
const MaxHistorySize = 100000

func validateNamespaces(namespaces []Namespace) error {
	seen := make(map[string]bool, len(namespaces))
	for i, ns := range namespaces {
		p := ns.Prefix
		if p != "" && !protocol.ValidChannel(p) {
			return fmt.Errorf("invalid namespaces[%d] prefix %q: use at most %d letters, digits and _ - : . @",
				i, p, protocol.MaxChannelLen)
		}
		if strings.HasSuffix(p, ":") {
			return fmt.Errorf("invalid namespaces[%d] prefix %q: must not end with \":\" (prefix %q already covers %q)",
				i, p, strings.TrimSuffix(p, ":"), p+"*")
		}
		if ns.HistorySize < 0 || ns.HistorySize > MaxHistorySize {
			return fmt.Errorf("invalid namespaces[%d] history_size %d: must be 0 to %d", i, ns.HistorySize, MaxHistorySize)
		}
		if ns.HistoryTTL < 0 {
			return fmt.Errorf("invalid namespaces[%d] history_ttl: must not be negative", i)
		}
		if seen[p] {
			return fmt.Errorf("invalid namespaces: prefix %q appears more than once", p)
		}
		seen[p] = true
	}
	return nil
}

// checkListenAddr checks the form of a TCP listen address: HOST:PORT or
// :PORT, the port a number up to 65535 or a service name (host names are
// resolved when listening).
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want HOST:PORT or :PORT")
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return fmt.Errorf("port %q is not a number from 0 to 65535 or a service name", port)
	}
	return nil
}

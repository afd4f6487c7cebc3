package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/herald-rt/herald/internal/bench"
)

// benchUsage is the help text; %s is where the scenarios' list goes.
const benchUsage = `Usage: herald bench SCENARIO [flags]

Load generator for herald. Targets loopback addresses only (127.0.0.0/8, ::1).

Scenarios:
%s
Latency is receive time minus the publication's intended send time on a fixed schedule
(no coordinated omission). Progress goes to stderr once a second; the report to stdout.
Ctrl-C stops and prints a partial report. Loss, drops and errors are reported, not failed
on; the exit status is 1 when not one connection could be made or the server named by
--server-pid exits during the run (the report is printed first), 2 for bad flags.

Example:
  ulimit -n 20000
  herald serve --addr 127.0.0.1:18080 --jwt-secret S --api-key 0123456789abcdef0123 &
  herald bench fanout --url ws://127.0.0.1:18080/ws --jwt-secret S \
      --api-key 0123456789abcdef0123 --conns 1000 --rate 10 --duration 10s --server-pid $!

Flags:
`

// benchCmd runs "herald bench".
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "worker" {
		// Hidden: a worker process started by a parent bench with --workers.
		return bench.WorkerMain(os.Stdin, stdout)
	}
	cfg := bench.Defaults()
	usage := fmt.Sprintf(benchUsage, bench.ScenarioUsage())
	fs := flag.NewFlagSet("herald bench", flag.ContinueOnError)
	fs.StringVar(&cfg.URL, "url", envOr("HERALD_URL", "ws://127.0.0.1:8080/ws"), "server WebSocket URL, loopback only; several, comma-separated, are the nodes of one cluster (--broker redis): worker k connects to node k mod n, the publisher to the first (env HERALD_URL)")
	fs.StringVar(&cfg.APIURL, "api-url", "", "server API base URL (default: http:// on the --url host and port)")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "the server's HS256 secret; tokens for users bench-0… are minted locally (env HERALD_JWT_SECRET)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "server API key for POST /api/publish (env HERALD_API_KEYS, first key)")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "subscriber connections")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "concurrent dialers (split between workers)")
	fs.DurationVar(&cfg.Hold, "hold", cfg.Hold, "idle: how long to hold the connections")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "publications per second")
	fs.IntVar(&cfg.Payload, "payload", cfg.Payload, "bytes of data per publication (sequence number, intended time, padding)")
	fs.BoolVar(&cfg.Compressible, "compressible", false, "fill the payload with realistic JSON-like records (deflate to 1/4–1/3) instead of a run of 'x'")
	fs.BoolVar(&cfg.Compress, "compress", false, "subscribers offer permessage-deflate (no context takeover) and inflate compressed deliveries")
	fs.BoolVar(&cfg.SubscribeInURL, "subscribe-in-url", false, "subscribe through the upgrade request (/ws?subscribe=CHANNEL) instead of a subscribe command after connected: one round trip")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to publish")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "how long to wait for outstanding deliveries after publishing")
	fs.StringVar(&cfg.PublishVia, "publish-via", cfg.PublishVia, "api (POST /api/publish) or ws (client message frames; the server's --rate-limit applies)")
	fs.IntVar(&cfg.Publishers, "publishers", cfg.Publishers, "concurrent publishing lanes (HTTP connections or WebSockets)")
	fs.DurationVar(&cfg.Spin, "spin", cfg.Spin, "publish on time: sleep until this long before each publication is due, then spin until it is (Go's timers fire 0–1 ms late on Linux); used while --rate × --spin ≤ 0.1, 0 = timers only")
	fs.StringVar(&cfg.Channel, "channel", cfg.Channel, "channel for idle, fanout, connect and recovery")
	fs.IntVar(&cfg.GroupSize, "group-size", cfg.GroupSize, "channels: connections per group channel")
	fs.DurationVar(&cfg.DropEvery, "drop-every", cfg.DropEvery, "recovery: drop a tenth of the connections this often")
	fs.DurationVar(&cfg.DropDown, "drop-down", cfg.DropDown, "recovery: how long a dropped connection stays away")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "server process id: measure its RSS and CPU from /proc")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "worker processes to spread the connections over (on Linux, connections to an IPv4 target rotate through source addresses 127.0.0.1–8 either way)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", cfg.ConnectTimeout, "bound on one connection's dial, upgrade and subscribe")
	fs.IntVar(&cfg.ReadBuffer, "read-buffer", cfg.ReadBuffer, "read buffer per connection, bytes")
	fs.StringVar(&cfg.Reader, "reader", cfg.Reader, "receive path: epoll (Linux only, not 386: raw sockets, set up and read by a few epoll loops, one read per delivery) or goroutine (net.Dial and one goroutine per connection); recovery always uses goroutine")
	fs.StringVar(&cfg.Protocol, "protocol", cfg.Protocol, "how subscribers connect: ws (the native WebSocket protocol), sse (Server-Sent Events streams on --sse-path of the --url host, one goroutine per connection; not for recovery) or socketio (Socket.IO over WebSocket on --socketio-path, subscribing with subscribe events; either --reader; not for recovery)")
	fs.StringVar(&cfg.SSEPath, "sse-path", cfg.SSEPath, "the server's --sse-path, for --protocol sse")
	fs.StringVar(&cfg.SocketIOPath, "socketio-path", cfg.SocketIOPath, "the server's --socketio-path, for --protocol socketio")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", cfg.TokenTTL, "lifetime of the minted tokens")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "no progress lines on stderr")
	cpuprofile := fs.String("cpuprofile", "", "write the generator's own CPU profile (parent process) to this file")
	// The scenario may come before or after the flags.
	rest := args
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		cfg.Scenario, rest = rest[0], rest[1:]
		if err := parseFlags(fs, rest, stdout, usage); err != nil {
			return err
		}
	} else {
		if err := parseFlags(fs, rest, stdout, usage); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return usageError{errors.New("bench: a SCENARIO is required (idle, fanout, channels, connect, recovery; see herald bench --help)")}
		}
		cfg.Scenario = fs.Arg(0)
		if err := parseFlags(fs, fs.Args()[1:], stdout, usage); err != nil {
			return err
		}
	}
	fromEnv(&cfg.JWTSecret, "HERALD_JWT_SECRET")
	if cfg.APIKey == "" {
		cfg.APIKey = firstKey(os.Getenv("HERALD_API_KEYS"))
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("bench: %w", err)}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	_, err := bench.Run(ctx, cfg, stdout, stderr)
	return err
}

func firstKey(list string) string {
	k, _, _ := strings.Cut(list, ",")
	return strings.TrimSpace(k)
}

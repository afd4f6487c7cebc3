// Command herald is a real-time WebSocket messaging server.
//
//	herald serve            run the server
//	herald token            mint a development JWT
//	herald sub CHANNEL      print what is published to CHANNEL
//	herald pub CHANNEL JSON publish JSON to CHANNEL
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `herald — real-time WebSocket messaging server

Usage:
  herald serve [flags]          run the server (herald serve --help for every option)
  herald token [flags]          mint a signed JWT for development and tests
  herald sub [flags] CHANNEL    subscribe and print every frame, one JSON per line
  herald pub [flags] CHANNEL JSON
                                publish JSON to CHANNEL over WebSocket
  herald bench SCENARIO [flags] load-test a server on loopback (idle, fanout, channels, connect, recovery)
  herald version                print the version

Each subcommand takes --help.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one subcommand and returns the process exit status:
// 0 success, 1 runtime failure, 2 bad usage or configuration.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stdout, stderr)
	case "token":
		err = token(args[1:], stdout, stderr)
	case "sub":
		err = sub(ctx, args[1:], stdout, stderr)
	case "pub":
		err = pub(ctx, args[1:], stdout, stderr)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "herald", version)
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "herald: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "herald:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "herald:", err)
		return 1
	}
}

// usageError marks errors in arguments or configuration (exit status 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

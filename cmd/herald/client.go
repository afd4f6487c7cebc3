package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/auth"
)

// parseFlags parses args with fs, which prints nothing itself. Help (-h,
// --help) prints usage and the flags to stdout and returns flag.ErrHelp
// (exit status 0); a bad flag or value is one line, returned as a usage
// error (exit status 2). Flags whose default would be a secret from the
// environment are declared with an empty default and filled in after
// parsing (fromEnv), so that no usage text ever shows one.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, usage string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return usageError{fmt.Errorf("%s: %w (see %s --help)", strings.TrimPrefix(fs.Name(), "herald "), err, fs.Name())}
	}
	return nil
}

// fromEnv sets *v from the environment variable key when the flag left it
// empty.
func fromEnv(v *string, key string) {
	if *v == "" {
		*v = os.Getenv(key)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// token mints an HS256 JWT with the configured secret.
func token(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald token", flag.ContinueOnError)
	user := fs.String("user", "", "user id (the token's sub claim); required")
	org := fs.String("org", "", "organisation id (org claim): grants org:{org} channels")
	role := fs.String("role", "", "role claim")
	ttl := fs.Duration("ttl", time.Hour, "lifetime; the token's exp is now+ttl")
	channels := fs.String("channels", "", "comma-separated allow-list of channels or prefix patterns like docs:*")
	secret := fs.String("jwt-secret", "", "HS256 secret (env HERALD_JWT_SECRET)")
	if err := parseFlags(fs, args, stdout, "Usage: herald token --user ID [--org ORG] [--role ROLE] [--ttl 1h] [--channels a,b:*]\n\nMints an HS256 JWT signed with the server's --jwt-secret, for development and tests.\n\n"); err != nil {
		return err
	}
	fromEnv(secret, "HERALD_JWT_SECRET")
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("token: unexpected argument %q", fs.Arg(0))}
	}
	if *user == "" {
		return usageError{errors.New("token: --user is required")}
	}
	if *secret == "" {
		return usageError{errors.New("token: --jwt-secret or HERALD_JWT_SECRET is required")}
	}
	id := auth.Identity{UserID: *user, OrgID: *org, Role: *role}
	if *channels != "" {
		id.Channels = strings.Split(*channels, ",")
	}
	tok, err := auth.Mint([]byte(*secret), id, *ttl)
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// clientFlags are the connection flags shared by sub and pub.
type clientFlags struct {
	url   *string
	token *string
	user  *string
	org   *string
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		url:   fs.String("url", envOr("HERALD_URL", "ws://localhost:8080/ws"), "server WebSocket URL (env HERALD_URL)"),
		token: fs.String("token", "", "JWT to authenticate with (env HERALD_TOKEN)"),
		user:  fs.String("user", "", "with a server in --insecure-query-auth mode: connect as this userId instead of a token"),
		org:   fs.String("org", "", "with --user: the org to claim"),
	}
}

func (f clientFlags) dial(ctx context.Context) (*websocket.Conn, error) {
	fromEnv(f.token, "HERALD_TOKEN")
	u, err := url.Parse(*f.url)
	if err != nil {
		return nil, usageError{fmt.Errorf("bad --url: %w", err)}
	}
	q := u.Query()
	if *f.user != "" {
		q.Set("userId", *f.user)
		if *f.org != "" {
			q.Set("org", *f.org)
		}
	}
	u.RawQuery = q.Encode()
	h := http.Header{}
	if *f.token != "" {
		h.Set("Authorization", "Bearer "+*f.token)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, fmt.Errorf("connect %s: %s %s", u.Redacted(), resp.Status, strings.TrimSpace(string(body)))
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

type frame struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	ID      json.RawMessage `json:"id"`
}

// sub prints every frame received after subscribing, one JSON per line.
func sub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald sub", flag.ContinueOnError)
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, stdout, "Usage: herald sub [flags] CHANNEL\n\nSubscribes to CHANNEL and prints every frame the server sends, one JSON object per line, until interrupted.\n\n"); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("sub: exactly one CHANNEL is required")}
	}
	conn, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = conn.Close()
	})
	defer stop()
	cmd, _ := json.Marshal(map[string]string{"type": "subscribe", "channel": fs.Arg(0)})
	if err := conn.WriteMessage(websocket.TextMessage, cmd); err != nil {
		return err
	}
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Errorf("closed by server: %d %s", ce.Code, ce.Text)
			}
			return err
		}
		fmt.Fprintln(stdout, string(msg))
		var f frame
		if json.Unmarshal(msg, &f) == nil && f.Type == "error" && f.Channel == fs.Arg(0) {
			return fmt.Errorf("subscribe refused: %s: %s", f.Code, f.Message)
		}
	}
}

// pub publishes one JSON value and waits for the server's acknowledgement.
func pub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald pub", flag.ContinueOnError)
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, stdout, "Usage: herald pub [flags] CHANNEL JSON\n\nPublishes JSON (any JSON value) to CHANNEL as a client \"message\" and waits for the acknowledgement.\n\n"); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageError{fmt.Errorf("pub: want CHANNEL and JSON, got %d arguments (quote the JSON as one argument)", fs.NArg())}
	}
	data := json.RawMessage(fs.Arg(1))
	if !json.Valid(data) {
		return usageError{errors.New("pub: JSON argument is not valid JSON")}
	}
	conn, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	cmd, _ := json.Marshal(map[string]any{"type": "message", "channel": fs.Arg(0), "data": data, "id": "pub-1"})
	if err := conn.WriteMessage(websocket.TextMessage, cmd); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("waiting for acknowledgement: %w", err)
		}
		var f frame
		if json.Unmarshal(msg, &f) != nil || string(f.ID) != `"pub-1"` {
			continue
		}
		if f.Type == "error" {
			return fmt.Errorf("publish refused: %s: %s", f.Code, f.Message)
		}
		fmt.Fprintln(stdout, string(msg))
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		return nil
	}
}

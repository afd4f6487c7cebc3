package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/testnet"
)

func TestUsageAndConfigErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "Usage"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"serve", "--bogus"}, 2, "bogus"},
		{[]string{"serve", "--addr", "127.0.0.1:0"}, 2, "no authentication configured"},
		{[]string{"serve", "--jwt-secret", "s", "--ping-interval", "nope"}, 2, "ping-interval"},
		{[]string{"serve", "--help"}, 0, "--client-queue-bytes"},
		{[]string{"token"}, 2, "--user is required"},
		{[]string{"pub", "chat", "{not json"}, 2, "not valid JSON"},
		{[]string{"version"}, 0, "herald"},
	}
	for _, tc := range cases {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.out) {
			t.Errorf("%v: exit %d, output %q; want exit %d containing %q", tc.args, code, out.String()+errOut.String(), tc.code, tc.out)
		}
		if tc.code == 2 && strings.Count(strings.TrimSpace(errOut.String()), "\n") > 0 && tc.args != nil && tc.args[0] == "serve" {
			t.Errorf("%v: config errors must be one line, got %q", tc.args, errOut.String())
		}
	}
}

// TestClientFlagErrors: the client commands answer a bad flag or value with
// one line and exit status 2, help goes to stdout with status 0, and no
// usage text shows a secret taken from the environment.
func TestClientFlagErrors(t *testing.T) {
	const secret, tok, keys = "env-secret-env-secret-env-secret", "env.token.value", "env-api-key-0123456789"
	t.Setenv("HERALD_JWT_SECRET", secret)
	t.Setenv("HERALD_TOKEN", tok)
	t.Setenv("HERALD_API_KEYS", keys)
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"token", "--bogus"}, 2, "token: flag provided but not defined: -bogus (see herald token --help)"},
		{[]string{"token", "--user", "a", "--ttl", "xyz"}, 2, `invalid value "xyz" for flag -ttl`},
		{[]string{"token", "--user", "a", "extra"}, 2, `token: unexpected argument "extra"`},
		{[]string{"sub", "--bogus"}, 2, "sub: flag provided but not defined: -bogus"},
		{[]string{"pub", "--bogus", "c", "1"}, 2, "pub: flag provided but not defined: -bogus"},
		{[]string{"pub", "chat", "{", "}"}, 2, "pub: want CHANNEL and JSON, got 3 arguments"},
		{[]string{"bench", "idle", "--bogus"}, 2, "bench: flag provided but not defined: -bogus"},
		{[]string{"bench", "--bogus"}, 2, "bench: flag provided but not defined: -bogus"},
		{[]string{"token", "--help"}, 0, "Mints an HS256 JWT"},
		{[]string{"sub", "--help"}, 0, "-token"},
		{[]string{"bench", "--help"}, 0, "-jwt-secret"},
		{[]string{"serve", "--help"}, 0, "--redis-url"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		all := out.String() + errOut.String()
		if code != tc.code || !strings.Contains(all, tc.out) {
			t.Errorf("%v: exit %d, output %q; want exit %d containing %q", tc.args, code, all, tc.code, tc.out)
		}
		if code == 2 && (out.Len() != 0 || strings.Count(strings.TrimSpace(errOut.String()), "\n") != 0) {
			t.Errorf("%v: want one line on stderr, got stdout %q, stderr %q", tc.args, out.String(), errOut.String())
		}
		if code == 0 && errOut.Len() != 0 {
			t.Errorf("%v: help on stderr: %q", tc.args, errOut.String())
		}
		for _, s := range []string{secret, tok, keys} {
			if strings.Contains(all, s) {
				t.Errorf("%v: output shows %q from the environment:\n%s", tc.args, s, all)
			}
		}
	}
	// The environment still counts where no flag is given.
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"token", "--user", "alice"}, &out, &errOut); code != 0 {
		t.Fatalf("token with HERALD_JWT_SECRET: exit %d: %s", code, errOut.String())
	}
	v, err := auth.NewVerifier(auth.VerifierOptions{HMACSecret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Verify(strings.TrimSpace(out.String())); err != nil || id.UserID != "alice" {
		t.Fatalf("token signed with the env secret: %+v %v", id, err)
	}
}

func TestTokenCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"token", "--user", "alice", "--org", "42", "--role", "owner", "--ttl", "5m", "--jwt-secret", "sekret-sekret"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	v, err := auth.NewVerifier(auth.VerifierOptions{HMACSecret: []byte("sekret-sekret")})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil || id.UserID != "alice" || id.OrgID != "42" || id.Role != "owner" {
		t.Fatalf("%+v %v", id, err)
	}
	if d := time.Until(id.ExpiresAt); d <= 4*time.Minute || d > 5*time.Minute {
		t.Fatalf("expiry in %v", d)
	}
}

// TestServeSubPub runs the binary's own commands end to end: serve, then sub
// and pub against it, then a graceful stop with exit status 0.
func TestServeSubPub(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const secret = "cli-test-secret-123"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan int, 1)
	var serveErr testnet.Buffer
	go func() {
		served <- run(ctx, []string{"serve", "--addr", addr, "--jwt-secret", secret, "--log-level", "warn"}, &bytes.Buffer{}, &serveErr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start: %s", serveErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The startup warnings follow "herald listening", which may come after
	// the first /healthz answer.
	for warned := time.Now().Add(5 * time.Second); !strings.Contains(serveErr.String(), "jwt-secret is shorter than the 32 bytes HS256 needs (RFC 7518): anyone with one token can guess it offline and forge tokens for any user\" bytes=19"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(warned) {
			t.Fatalf("no warning about the 19-byte secret in:\n%s", serveErr.String())
		}
	}
	tok := func(user string) string {
		var out bytes.Buffer
		if run(context.Background(), []string{"token", "--user", user, "--org", "7", "--jwt-secret", secret}, &out, &bytes.Buffer{}) != 0 {
			t.Fatal("token failed")
		}
		return strings.TrimSpace(out.String())
	}
	url := "ws://" + addr + "/ws"
	subCtx, stopSub := context.WithCancel(context.Background())
	var subOut testnet.Buffer
	subDone := make(chan int, 1)
	go func() {
		subDone <- run(subCtx, []string{"sub", "--url", url, "--token", tok("reader"), "org:7"}, &subOut, &bytes.Buffer{})
	}()
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(subOut.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("sub output %q lacks %q", subOut.String(), what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(`"type":"subscribed"`)
	var pubOut, pubErr bytes.Buffer
	if code := run(context.Background(), []string{"pub", "--url", url, "--token", tok("writer"), "org:7", `{"text":"hello"}`}, &pubOut, &pubErr); code != 0 {
		t.Fatalf("pub exit %d: %s", code, pubErr.String())
	}
	waitFor(`"data":{"text":"hello"}`)
	// Publishing into another org is refused with exit status 1.
	pubErr.Reset()
	if code := run(context.Background(), []string{"pub", "--url", url, "--token", tok("writer"), "org:8", `1`}, &pubOut, &pubErr); code != 1 || !strings.Contains(pubErr.String(), "forbidden") {
		t.Fatalf("pub to other org: exit %d, %s", code, pubErr.String())
	}
	stopSub()
	if code := <-subDone; code != 0 {
		t.Fatalf("sub exit %d", code)
	}
	cancel()
	select {
	case code := <-served:
		if code != 0 {
			t.Fatalf("serve exit %d: %s", code, serveErr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

package server_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/server"
	"github.com/herald-rt/herald/internal/server/servertest"
	"github.com/herald-rt/herald/internal/sparselog"
	"github.com/herald-rt/herald/internal/testnet"
)

// TestSecretsNeverReachTheLogs runs every attack that is logged — bad
// tokens of every kind (malformed, a wrong signature, expired, alg none,
// a crit header, a claim of the wrong type) in the query and in the
// Authorization header, on /ws, on the SSE stream and its commands and in a
// Socket.IO CONNECT; a token in the query of a path net/http would
// redirect; wrong API keys in both headers — and the good credentials'
// ordinary use, with the log at debug level and every event given its own
// line (the sparse log's clock moves an interval at each reading). No line
// holds a token, a key, or a token's signature or payload part.
func TestSecretsNeverReachTheLogs(t *testing.T) {
	var logs testnet.Buffer
	var mu sync.Mutex
	var clock sparselog.ManualClock
	everyEvent := func() time.Time { // each reading an interval on: every event is logged
		mu.Lock()
		defer mu.Unlock()
		clock.Advance(sparselog.Interval)
		return clock.Now()
	}
	s := servertest.StartLogged(t, func(c *config.Config) { c.SocketIOPath = "/socket.io/" },
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		func(s *server.Server) { s.SetLogClock(everyEvent) })
	server.CheckGoroutines(t)
	ts := &testServer{Server: s, t: t, srv: s.Server, addr: s.Addr}

	now := time.Now().Unix()
	hs := func(secret, header, claims string) string {
		return signHS256(secret, header, claims)
	}
	good := token(t, "alice", "")
	secrets := []string{
		"SECRET-MALFORMED-7c1e",
		hs("wrong-secret-0123456789abcdef0123", `{"alg":"HS256","typ":"JWT"}`, `{"sub":"mallory","exp":`+itoa(now+3600)+`}`),
		hs(servertest.Secret, `{"alg":"HS256","typ":"JWT"}`, `{"sub":"expired","exp":`+itoa(now-3600)+`}`),
		b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"nobody","exp":`+itoa(now+3600)+`}`) + ".",
		hs(servertest.Secret, `{"alg":"HS256","typ":"JWT","crit":["x-secret"],"x-secret":1}`, `{"sub":"crit","exp":`+itoa(now+3600)+`}`),
		hs(servertest.Secret, `{"alg":"HS256","typ":"JWT"}`, `{"sub":["typed"],"exp":`+itoa(now+3600)+`}`),
	}
	apiKeys := []string{"SECRET-API-KEY-wrong-4b2d", servertest.APIKey + "x"}

	for _, tok := range secrets {
		q := url.QueryEscape(tok)
		// /ws: in the query (fresh and keep-alive connections) and in the header.
		for _, keepAlive := range []bool{false, true} {
			if got := answer(t, ts, upgradeRequest(ts, "token="+q, "")+"", keepAlive); got != http.StatusUnauthorized {
				t.Fatalf("/ws with a bad token: %d", got)
			}
		}
		if got := answer(t, ts, upgradeRequest(ts, "", "Authorization: Bearer "+tok+"\r\n"), false); got != http.StatusUnauthorized {
			t.Fatalf("/ws with a bad bearer token: %d", got)
		}
		// Paths net/http would redirect, repeating the query.
		for _, path := range []string{"//ws", "/./ws", "//sse", "//socket.io/"} {
			rawStatus(t, ts, "GET "+path+"?token="+q+" HTTP/1.1\r\nHost: "+ts.addr+"\r\n\r\n")
		}
		// SSE: the stream and a command.
		httpDo(t, "GET", ts.httpURL("/sse?channel=c&token="+q), "", nil)
		httpDo(t, "GET", ts.httpURL("/sse?channel=c"), "", http.Header{"Authorization": {"Bearer " + tok}})
		httpDo(t, "POST", ts.httpURL("/sse/command"), `{"type":"ping"}`, http.Header{"Authorization": {"Bearer " + tok}})
		httpDo(t, "POST", ts.httpURL("/sse/command?token="+q), `{"type":"ping"}`, nil)
		// Socket.IO: CONNECT with the token in its auth.
		sid := sioOpen(t, ts)
		httpDo(t, "POST", ts.httpURL("/socket.io/?EIO=4&transport=polling&sid="+sid), `40{"token":"`+tok+`"}`, nil)
		httpDo(t, "GET", ts.httpURL("/socket.io/?EIO=4&transport=polling&sid="+sid), "", nil)
	}
	for _, key := range apiKeys {
		httpDo(t, "GET", ts.httpURL("/api/stats"), "", http.Header{"X-API-Key": {key}})
		httpDo(t, "GET", ts.httpURL("/api/stats"), "", http.Header{"Authorization": {"apikey " + key}})
		httpDo(t, "GET", ts.httpURL("/api/stats?api_key="+url.QueryEscape(key)), "", nil)
	}
	// The good token in upgrades that fail after it is read.
	for _, keepAlive := range []bool{false, true} {
		bad := "GET /ws?token=" + url.QueryEscape(good) + " HTTP/1.1\r\nHost: " + ts.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\n\r\n"
		answer(t, ts, bad, keepAlive)
		answer(t, ts, upgradeRequest(ts, "token="+url.QueryEscape(good), "Sec-WebSocket-Extensions: permessage-deflate; "+good+"\r\n"), keepAlive)
	}
	// The good credentials, used as they are meant to be.
	c := ts.dial("alice", "")
	c.conn.Close()
	httpDo(t, "GET", ts.httpURL("/api/stats"), "", http.Header{"X-API-Key": {servertest.APIKey}})
	httpDo(t, "POST", ts.httpURL("/api/publish"), `{"channel":"c","data":1}`, http.Header{"X-API-Key": {servertest.APIKey}})
	secrets = append(secrets, good, servertest.Secret)
	secrets = append(secrets, apiKeys...)
	secrets = append(secrets, servertest.APIKey)
	_ = s.Stop()

	out := logs.String()
	if testing.Verbose() {
		t.Log(out)
	}
	if !strings.Contains(out, "upgrade refused: unauthorized") || !strings.Contains(out, "api request refused") ||
		!strings.Contains(out, "socket.io input refused") || !strings.Contains(out, "upgrade failed") {
		t.Fatalf("the attacks were not logged; the test proves nothing:\n%s", out)
	}
	for _, secret := range secrets {
		for _, part := range fragments(secret) {
			for _, form := range []string{part, url.QueryEscape(part)} {
				if i := strings.Index(out, form); i >= 0 {
					line := out[strings.LastIndexByte(out[:i], '\n')+1:]
					t.Errorf("a credential's part %q is in the log: %s", form, line[:strings.IndexByte(line, '\n')+1])
				}
			}
		}
	}
}

// fragments are the parts of a credential recognisable on their own: the
// whole, and a JWT's payload and signature.
func fragments(secret string) []string {
	out := []string{secret}
	if parts := strings.Split(secret, "."); len(parts) == 3 {
		for _, p := range parts[1:] {
			if len(p) >= 8 {
				out = append(out, p)
			}
		}
	}
	return out
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// signHS256 is a JWT of header and claims signed with secret.
func signHS256(secret, header, claims string) string {
	in := b64(header) + "." + b64(claims)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// httpDo makes a request and reads its answer whole.
func httpDo(t *testing.T, method, target, body string, header http.Header) int {
	t.Helper()
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0 // a stream the server keeps open ends with the context
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// rawStatus sends a raw request and returns its answer's status.
func rawStatus(t *testing.T, ts *testServer, req string) int {
	t.Helper()
	c, br := rawSend(t, ts, []byte(req))
	defer c.Close()
	resp, err := http.ReadResponse(bufio.NewReader(br), nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// sioOpen opens an Engine.IO polling session and returns its sid.
func sioOpen(t *testing.T, ts *testServer) string {
	t.Helper()
	res, err := http.Get(ts.httpURL("/socket.io/?EIO=4&transport=polling"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	body := string(b)
	if !strings.HasPrefix(body, `0{"sid":"`) {
		t.Fatalf("handshake %q", body)
	}
	sid := body[len(`0{"sid":"`):]
	return sid[:strings.IndexByte(sid, '"')]
}

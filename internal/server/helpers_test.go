package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/server"
	"github.com/herald-rt/herald/internal/server/servertest"
)

const (
	testSecret = servertest.Secret
	testAPIKey = servertest.APIKey
)

// testServer is a real herald listening on a random loopback port.
type testServer struct {
	*servertest.Server
	t    *testing.T
	srv  *server.Server
	addr string
}

// start runs herald with test defaults changed by mutate.
func start(t *testing.T, mutate func(*config.Config)) *testServer {
	t.Helper()
	server.CheckGoroutines(t)
	s := servertest.Start(t, mutate)
	return &testServer{Server: s, t: t, srv: s.Server, addr: s.Addr}
}

// stop shuts the server down and returns Serve's result.
func (ts *testServer) stop() error { return ts.Stop() }

func (ts *testServer) wsURL(query string) string {
	u := "ws://" + ts.addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

func (ts *testServer) httpURL(path string) string { return "http://" + ts.addr + path }

// token mints a valid HS256 token.
func token(t *testing.T, user, org string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(testSecret), auth.Identity{UserID: user, OrgID: org}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// wsClient is a real WebSocket client (gorilla) speaking herald's protocol.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
	// Connected is the first frame the server sent.
	Connected map[string]any
}

// dial connects with a token for user/org and reads the connected frame.
func (ts *testServer) dial(user, org string) *wsClient {
	ts.t.Helper()
	return ts.dialURL(ts.wsURL("token="+url.QueryEscape(token(ts.t, user, org))), nil)
}

func (ts *testServer) dialURL(u string, h http.Header) *wsClient {
	ts.t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		status := ""
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			status = resp.Status + " " + string(body)
		}
		ts.t.Fatalf("dial: %v %s", err, status)
	}
	c := &wsClient{t: ts.t, conn: conn}
	ts.t.Cleanup(func() { conn.Close() })
	c.Connected = c.expect("connected")
	return c
}

// dialStatus attempts an upgrade that must fail and returns the HTTP status and body.
func (ts *testServer) dialStatus(u string, h http.Header) (int, map[string]any) {
	ts.t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(u, h)
	if err == nil {
		conn.Close()
		ts.t.Fatalf("dial %s succeeded, want failure", u)
	}
	if resp == nil {
		ts.t.Fatalf("dial: %v (no HTTP response)", err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *wsClient) sendRaw(b []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame as a map, failing the test after d.
func (c *wsClient) readWithin(d time.Duration) (map[string]any, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	typ, b, err := c.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	if typ != websocket.TextMessage {
		c.t.Fatalf("got message type %d, want text", typ)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("frame is not one JSON object: %q: %v", b, err)
	}
	return m, nil
}

func (c *wsClient) read() map[string]any {
	c.t.Helper()
	m, err := c.readWithin(20 * time.Second) // a failure bound for a loaded machine
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

// expect reads the next frame and checks its type.
func (c *wsClient) expect(typ string) map[string]any {
	c.t.Helper()
	m := c.read()
	if m["type"] != typ {
		c.t.Fatalf("got frame %v, want type %q", m, typ)
	}
	return m
}

// expectError reads an error frame with code.
func (c *wsClient) expectError(code string) map[string]any {
	c.t.Helper()
	m := c.expect("error")
	if m["code"] != code {
		c.t.Fatalf("got error %v, want code %q", m, code)
	}
	if s, _ := m["message"].(string); s == "" {
		c.t.Fatalf("error frame without message: %v", m)
	}
	return m
}

// expectNothing checks that no frame arrives within d.
func (c *wsClient) expectNothing(d time.Duration) {
	c.t.Helper()
	m, err := c.readWithin(d)
	if err == nil {
		c.t.Fatalf("got unexpected frame %v", m)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("read: %v, want timeout", err)
	}
	// gorilla's connection is unusable after a read timeout; callers use
	// expectNothing last on a client.
}

// expectClose reads until the connection closes and returns the close code.
func (c *wsClient) expectClose(d time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(d)
	n := 0
	for {
		_ = c.conn.SetReadDeadline(deadline)
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			n++
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection not closed within %v (%d frames read)", d, n)
		}
		c.t.Logf("expectClose: %v after %d frames", err, n)
		return websocket.CloseAbnormalClosure
	}
}

// subscribe subscribes and waits for the ack.
func (c *wsClient) subscribe(ch string) {
	c.t.Helper()
	c.send(map[string]any{"type": "subscribe", "channel": ch})
	m := c.expect("subscribed")
	if m["channel"] != ch {
		c.t.Fatalf("subscribed ack %v for wrong channel, want %q", m, ch)
	}
}

// sync makes a ping round trip so every earlier command has been handled.
func (c *wsClient) sync() {
	c.t.Helper()
	c.send(map[string]any{"type": "ping", "id": "sync"})
	m := c.expect("pong")
	if m["id"] != "sync" {
		c.t.Fatalf("pong %v lacks id", m)
	}
}

// api calls the server API and decodes the JSON answer.
func (ts *testServer) api(method, path, key string, body string) (int, map[string]any) {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.httpURL(path), strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		ts.t.Fatalf("%s %s: content type %q, body %q", method, path, ct, raw)
	}
	var m map[string]any
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&m); err != nil {
		ts.t.Fatalf("%s %s: body %q is not JSON: %v", method, path, raw, err)
	}
	return resp.StatusCode, m
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricsText fetches /metrics.
func (ts *testServer) metricsText() string {
	ts.t.Helper()
	resp, err := http.Get(ts.httpURL("/metrics"))
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// containsLine reports whether a metrics exposition has a sample starting with prefix.
func containsLine(text, prefix string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

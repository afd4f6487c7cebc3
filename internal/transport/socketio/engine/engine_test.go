package engine

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// echo is a Handler that sends back every message and records the close.
type echo struct {
	ss     *Session
	mu     sync.Mutex
	closed chan string
}

func (e *echo) OnMessage(data []byte, binary bool) {
	if binary {
		_ = e.ss.SendBinary(data)
		return
	}
	_ = e.ss.Send(append([]byte{'4'}, data...), nil)
}

func (e *echo) OnClose(reason string) { e.closed <- reason }

type fixture struct {
	t      *testing.T
	srv    *Server
	url    string
	mu     sync.Mutex
	errs   map[string]int
	closes chan string
}

func newFixture(t *testing.T, tweak func(*Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, errs: map[string]int{}, closes: make(chan string, 100)}
	o := Options{
		// No heartbeat within an ordinary test, however slow the machine:
		// the tests of the heartbeat shorten it (shortPing).
		PingInterval: 10 * time.Second, PingTimeout: 10 * time.Second, MaxPayload: 1000,
		Open: func(s *Session, r *http.Request) (Handler, error) {
			if r.URL.Query().Get("refuse") != "" {
				return nil, errors.New("refused")
			}
			return &echo{ss: s, closed: f.closes}, nil
		},
		OnError: func(kind string, err error) {
			f.mu.Lock()
			f.errs[kind]++
			f.mu.Unlock()
		},
	}
	if tweak != nil {
		tweak(&o)
	}
	f.srv = New(o)
	hs := httptest.NewServer(f.srv)
	t.Cleanup(func() { f.srv.Close(); hs.Close() })
	f.url = hs.URL + "/engine.io/?EIO=4"
	return f
}

func (f *fixture) errCount(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errs[kind]
}

func (f *fixture) do(method, query, body string) (int, string) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.url+query, strings.NewReader(body))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, query, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (f *fixture) open() string {
	f.t.Helper()
	code, body := f.do("GET", "&transport=polling", "")
	if code != 200 || !strings.HasPrefix(body, "0") {
		f.t.Fatalf("handshake: %d %q", code, body)
	}
	var h struct {
		SID                       string
		Upgrades                  []string
		PingInterval, PingTimeout int
		MaxPayload                int
	}
	if err := json.Unmarshal([]byte(body[1:]), &h); err != nil {
		f.t.Fatal(err)
	}
	if h.SID == "" || len(h.Upgrades) != 1 || h.Upgrades[0] != "websocket" || int64(h.PingInterval) != f.srv.o.PingInterval.Milliseconds() || int64(h.PingTimeout) != f.srv.o.PingTimeout.Milliseconds() || h.MaxPayload != 1000 {
		f.t.Fatalf("open packet %q", body)
	}
	return h.SID
}

func (f *fixture) dial(query string) net.Conn {
	f.t.Helper()
	u := strings.Replace(f.url, "http", "ws", 1) + "&transport=websocket" + query
	nc, br, _, err := ws.Dial(context.Background(), u)
	if err != nil {
		f.t.Fatalf("dial %s: %v", u, err)
	}
	f.t.Cleanup(func() { nc.Close() })
	if br != nil { // frames that came with the handshake's answer
		return &bufConn{Conn: nc, r: io.MultiReader(br, nc)}
	}
	return nc
}

type bufConn struct {
	net.Conn
	r io.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func readText(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, op, err := wsutil.ReadServerData(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if op != ws.OpText {
		t.Fatalf("op %v %q", op, b)
	}
	return string(b)
}

// readUntilClose reads until the server closes, returning the close code.
func readUntilClose(t *testing.T, c net.Conn) ws.StatusCode {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := wsutil.ReadServerData(c)
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil {
			return 0
		}
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, nil)
	for _, tc := range []struct {
		method, query string
		status, code  int
	}{
		{"GET", "&transport=abc", 400, codeTransportUnknown},
		{"GET", "", 400, codeTransportUnknown},
		{"POST", "&transport=polling", 400, codeBadHandshakeMethod},
		{"PUT", "&transport=polling", 400, codeBadHandshakeMethod},
		{"GET", "&transport=polling&sid=nope", 400, codeUnknownSID},
		{"POST", "&transport=polling&sid=nope", 400, codeUnknownSID},
		{"GET", "&transport=websocket", 400, codeBadRequest},
		{"GET", "&transport=polling&refuse=1", 403, codeForbidden},
	} {
		status, body := f.do(tc.method, tc.query, "")
		var e struct {
			Code    int
			Message string
		}
		if status != tc.status || json.Unmarshal([]byte(body), &e) != nil || e.Code != tc.code || e.Message == "" {
			t.Errorf("%s %s: %d %s, want %d code %d", tc.method, tc.query, status, body, tc.status, tc.code)
		}
	}
	for _, q := range []string{"?EIO=3&transport=polling", "?transport=polling", "?EIO=abc&transport=polling"} {
		res, err := http.Get(strings.TrimSuffix(f.url, "?EIO=4") + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 400 || !strings.Contains(string(b), `"code":5`) {
			t.Errorf("%s: %d %s", q, res.StatusCode, b)
		}
	}
	if f.errCount(KindUnknownSID) != 2 || f.errCount(KindBadRequest) < 5 {
		t.Errorf("errors %v", f.errs)
	}
	if n := f.srv.NumSessions(); n != 0 {
		t.Errorf("%d sessions after refusals", n)
	}
}

// shortPing pings every 300 ms and waits timeout for the pong.
func shortPing(timeout time.Duration) func(*Options) {
	return func(o *Options) { o.PingInterval, o.PingTimeout = 300*time.Millisecond, timeout }
}

func TestPollingEcho(t *testing.T) {
	// Pings come soon; the pongs have all the time a loaded machine needs.
	f := newFixture(t, shortPing(10*time.Second))
	sid := f.open()
	q := "&transport=polling&sid=" + sid
	if code, body := f.do("POST", q, "4hello\x1e4test2\x1ebAQIDBA=="); code != 200 || body != "ok" {
		t.Fatalf("post: %d %q", code, body)
	}
	if code, body := f.do("GET", q, ""); code != 200 || body != "4hello\x1e4test2\x1ebAQIDBA==" {
		t.Fatalf("poll: %d %q", code, body)
	}
	// Heartbeat over polling: the ping ends a held poll; answered, the
	// session lives on.
	for i := 0; i < 2; i++ {
		if code, body := f.do("GET", q, ""); code != 200 || body != "2" {
			t.Fatalf("poll %d: %d %q, want a ping", i, code, body)
		}
		if code, _ := f.do("POST", q, "3"); code != 200 {
			t.Fatalf("pong: %d", code)
		}
	}
}

func TestPollingBadInput(t *testing.T) {
	f := newFixture(t, nil)
	// An invalid packet closes the session.
	sid := f.open()
	q := "&transport=polling&sid=" + sid
	if code, _ := f.do("POST", q, "abc"); code != 400 {
		t.Fatalf("invalid packet: %d", code)
	}
	if code, _ := f.do("GET", q, ""); code != 400 {
		t.Fatalf("poll after invalid packet: %d", code)
	}
	if f.errCount(KindBadPacket) != 1 {
		t.Errorf("bad packets %d", f.errCount(KindBadPacket))
	}
	// An oversize payload: 413, closed.
	sid = f.open()
	q = "&transport=polling&sid=" + sid
	if code, _ := f.do("POST", q, "4"+strings.Repeat("x", 1000)); code != 413 {
		t.Fatalf("oversize: %d", code)
	}
	if code, _ := f.do("GET", q, ""); code != 400 {
		t.Fatalf("poll after oversize: %d", code)
	}
	// Two polls at once: the first gets a close packet, the second 400,
	// and the session is gone.
	sid = f.open()
	q = "&transport=polling&sid=" + sid
	first := make(chan string, 1)
	go func() { _, body := f.do("GET", q, ""); first <- body }()
	waitFor(t, func() bool {
		ss := f.srv.lookup(sid)
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.pending != nil
	})
	if code, _ := f.do("GET", q, ""); code != 400 {
		t.Fatalf("second poll: %d", code)
	}
	if body := <-first; body != "1" {
		t.Fatalf("first poll: %q", body)
	}
	if code, _ := f.do("GET", q, ""); code != 400 {
		t.Fatalf("poll after duplicate: %d", code)
	}
	if f.errCount(KindDuplicatePoll) != 1 || f.errCount(KindTooLarge) != 1 {
		t.Errorf("errors %v", f.errs)
	}
	// A client's close: the held poll ends with a noop.
	sid = f.open()
	q = "&transport=polling&sid=" + sid
	go func() { _, body := f.do("GET", q, ""); first <- body }()
	waitFor(t, func() bool {
		ss := f.srv.lookup(sid)
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.pending != nil
	})
	if code, _ := f.do("POST", q, "1"); code != 200 {
		t.Fatalf("close: %d", code)
	}
	if body := <-first; body != "6" {
		t.Fatalf("held poll at close: %q", body)
	}
	waitFor(t, func() bool { return f.srv.NumSessions() == 0 })
}

func TestPingTimeout(t *testing.T) {
	f := newFixture(t, shortPing(200*time.Millisecond))
	sid := f.open()
	select {
	case r := <-f.closes:
		if r != "ping timeout" {
			t.Fatalf("closed: %q", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not closed")
	}
	if code, _ := f.do("GET", "&transport=polling&sid="+sid, ""); code != 400 {
		t.Fatalf("poll after timeout: %d", code)
	}
	c := f.dial("")
	readText(t, c) // open
	if got := readText(t, c); got != "2" {
		t.Fatalf("ws: %q, want a ping", got)
	}
	if code := readUntilClose(t, c); code != ws.StatusNormalClosure {
		t.Fatalf("ws close %d", code)
	}
	if f.errCount(KindPingTimeout) != 2 {
		t.Errorf("ping timeouts %d", f.errCount(KindPingTimeout))
	}
}

func TestWebSocket(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial("")
	open := readText(t, c)
	if !strings.HasPrefix(open, `0{"sid":`) || !strings.Contains(open, `"upgrades":[]`) {
		t.Fatalf("open %q", open)
	}
	_ = wsutil.WriteClientText(c, []byte("4hello"))
	if got := readText(t, c); got != "4hello" {
		t.Fatalf("echo %q", got)
	}
	_ = wsutil.WriteClientBinary(c, []byte{1, 2, 3})
	b, op, err := wsutil.ReadServerData(c)
	if err != nil || op != ws.OpBinary || string(b) != "\x01\x02\x03" {
		t.Fatalf("binary echo %v %q %v", op, b, err)
	}
	_ = wsutil.WriteClientText(c, []byte("3"))
	// Invalid packet: closed.
	_ = wsutil.WriteClientText(c, []byte("abc"))
	readUntilClose(t, c)
	// Oversize message: 1009.
	c = f.dial("")
	readText(t, c)
	_ = wsutil.WriteClientText(c, []byte("4"+strings.Repeat("x", 1001)))
	if code := readUntilClose(t, c); code != ws.StatusMessageTooBig {
		t.Fatalf("oversize closed with %d", code)
	}
	// Client close packet.
	c = f.dial("")
	readText(t, c)
	_ = wsutil.WriteClientText(c, []byte("1"))
	readUntilClose(t, c)
	waitFor(t, func() bool { return f.srv.NumSessions() == 0 })
}

func TestUpgrade(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.PingInterval = 5 * time.Second })
	sid := f.open()
	q := "&transport=polling&sid=" + sid
	held := make(chan string, 1)
	go func() { _, body := f.do("GET", q, ""); held <- body }()
	waitFor(t, func() bool {
		ss := f.srv.lookup(sid)
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.pending != nil
	})
	c := f.dial("&sid=" + sid)
	_ = wsutil.WriteClientText(c, []byte("2probe"))
	if got := readText(t, c); got != "3probe" {
		t.Fatalf("probe answer %q", got)
	}
	if body := <-held; body != "6" {
		t.Fatalf("held poll at probe: %q", body)
	}
	// A second WebSocket for the session is closed at once.
	if code := readUntilClose(t, f.dial("&sid="+sid)); code != ws.StatusPolicyViolation {
		t.Fatalf("second websocket closed with %d", code)
	}
	_ = wsutil.WriteClientText(c, []byte("5"))
	_ = wsutil.WriteClientText(c, []byte("4hello"))
	if got := readText(t, c); got != "4hello" {
		t.Fatalf("after upgrade %q", got)
	}
	if code, _ := f.do("GET", q, ""); code != 400 {
		t.Fatalf("poll after upgrade: %d", code)
	}
	if code, _ := f.do("POST", q, "4x"); code != 400 {
		t.Fatalf("post after upgrade: %d", code)
	}
	// A probe that sends anything else is dropped; the session polls on.
	sid = f.open()
	c = f.dial("&sid=" + sid)
	_ = wsutil.WriteClientText(c, []byte("4nope"))
	readUntilClose(t, c)
	if code, _ := f.do("POST", "&transport=polling&sid="+sid, "4still"); code != 200 {
		t.Fatalf("post after failed probe: %d", code)
	}
	if code, body := f.do("GET", "&transport=polling&sid="+sid, ""); code != 200 || body != "4still" {
		t.Fatalf("poll after failed probe: %d %q", code, body)
	}
}

func TestLimits(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxSessions = 1; o.QueueBytes = 64; o.PingInterval = 5 * time.Second })
	sid := f.open()
	if code, _ := f.do("GET", "&transport=polling", ""); code != 503 {
		t.Fatalf("past MaxSessions: %d", code)
	}
	// Nobody polls: the echoes queue up past QueueBytes and the session is
	// closed as slow.
	q := "&transport=polling&sid=" + sid
	for i := 0; i < 3; i++ {
		f.do("POST", q, "4"+strings.Repeat("y", 30))
	}
	if code, _ := f.do("GET", q, ""); code != 400 {
		t.Fatalf("slow session still open: %d", code)
	}
	if f.errCount(KindSlowConsumer) != 1 || f.errCount(KindSessionsFull) != 1 {
		t.Errorf("errors %v", f.errs)
	}
}

// TestNoLeak opens and ends sessions every way and checks every goroutine
// they started has exited.
func TestNoLeak(t *testing.T) {
	f := newFixture(t, nil)
	base := runtime.NumGoroutine()
	for i := 0; i < 5; i++ {
		c := f.dial("")
		readText(t, c)
		_ = wsutil.WriteClientText(c, []byte("4x"))
		c.Close()
		sid := f.open()
		f.do("POST", "&transport=polling&sid="+sid, "1")
	}
	waitFor(t, func() bool { return f.srv.NumSessions() == 0 })
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= base+2 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSendWait: past waitBytes queued, SendWait waits until a poll takes
// the queue, and gives up when the session closes.
func TestSendWait(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.QueueBytes = 4 * waitBytes })
	sid := f.open()
	ss := f.srv.lookup(sid)
	big := append([]byte{'4'}, strings.Repeat("z", waitBytes)...)
	if err := ss.SendWait(big); err != nil { // fits: nothing queued before it
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ss.SendWait([]byte("4next")) }()
	select {
	case err := <-done:
		t.Fatalf("SendWait returned %v with %d bytes queued", err, waitBytes+1)
	case <-time.After(50 * time.Millisecond):
	}
	q := "&transport=polling&sid=" + sid
	if code, body := f.do("GET", q, ""); code != 200 || len(body) != len(big) {
		t.Fatalf("poll: %d, %d bytes", code, len(body))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, body := f.do("GET", q, ""); body != "4next" {
		t.Fatalf("second poll %q", body)
	}
	_ = ss.SendWait(big)
	go func() { done <- ss.SendWait([]byte("4late")) }()
	ss.Close("test")
	if err := <-done; err != ErrClosed {
		t.Fatalf("SendWait after close: %v", err)
	}
}

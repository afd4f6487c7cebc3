package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/redistest"
)

// gatedNode starts a node of rs's cluster (prefix) whose Redis address is a
// path where nothing answers until open is called (a link to rs's socket):
// until then its broker has never verified Redis, as a node that has just
// restarted, and refuses every subscribe as unavailable.
func gatedNode(t *testing.T, rs *redistest.Server, prefix string) (ts *testServer, open func()) {
	t.Helper()
	dir, err := os.MkdirTemp("", "herald-gate-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	gate := filepath.Join(dir, "redis.sock")
	ts = start(t, func(c *config.Config) {
		c.Broker, c.RedisURL, c.RedisPrefix = "redis", "unix://"+gate, prefix
	})
	return ts, func() {
		t.Helper()
		if err := os.Symlink(rs.Socket, gate); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the gated node's broker live", func() bool {
			st, _ := ts.api("GET", "/healthz", "", "")
			return st == 200
		})
	}
}

// lastArg returns the last argument of a Socket.IO EVENT packet (42[...]),
// a delivery's recovery offset.
func lastArg(t *testing.T, pkt string) string {
	t.Helper()
	var args []json.RawMessage
	if err := json.Unmarshal([]byte(strings.TrimPrefix(pkt, "42")), &args); err != nil || len(args) == 0 {
		t.Fatalf("event packet %q: %v", pkt, err)
	}
	var s string
	if err := json.Unmarshal(args[len(args)-1], &s); err != nil {
		t.Fatalf("event packet %q: last argument is not a recovery offset", pkt)
	}
	return s
}

// sioCut connects a socket (user ana of org 42) to ts over WebSocket,
// joins org:42, receives one publication there and drops the connection;
// it returns the socket's pid and the CONNECT packet socket.io-client sends
// when it reconnects (its pid and recovery offset).
func sioCut(t *testing.T, ts *testServer) (pid, reconnect string) {
	t.Helper()
	s := ts.dialSIO()
	s.send(`40{"token":"` + token(t, "ana", "42") + `"}`)
	pid = connectedPID(t, s.read())
	offset := joinAndCut(t, ts, s)
	return pid, `40{"token":"` + token(t, "ana", "42") + `","pid":"` + pid + `","offset":` + strconv.Quote(offset) + `}`
}

// connectedPID returns the pid of a CONNECT answer with recovery.
func connectedPID(t *testing.T, connected string) string {
	t.Helper()
	var ans struct{ PID string }
	if !strings.HasPrefix(connected, `40{"sid":"`) || json.Unmarshal([]byte(connected[2:]), &ans) != nil || ans.PID == "" {
		t.Fatalf("connect answer %q", connected)
	}
	return ans.PID
}

// joinAndCut joins the connected socket s (of org 42) to org:42, receives
// one publication there and drops the connection; it returns the
// publication's recovery offset.
func joinAndCut(t *testing.T, ts *testServer, s *sioWS) string {
	t.Helper()
	s.send(`421["join:analytics","42"]`)
	if p := s.readUntil("431"); !strings.Contains(p, `"ok":true`) {
		t.Fatalf("join %q", p)
	}
	if st, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":1}`); st != 200 {
		t.Fatalf("publish: %d %v", st, body)
	}
	offset := lastArg(t, s.readUntil(`42["message"`))
	s.conn.Close()
	return offset
}

// A socket that recovers on a node whose broker has not verified Redis yet
// (a node just restarted) is not told its history is lost: its connection
// ends with no answer to its CONNECT and no DISCONNECT packet, over WebSocket
// and over polling, so socket.io-client keeps its pid and offset and
// reconnects; once the node is live, the same CONNECT recovers everything
// published meanwhile, with the same pid. A native subscribe with since gets
// "unavailable" (retry), never recovered:false.
func TestSocketIORecoveryWaitsForTheBroker(t *testing.T) {
	rs := sharedRedis(t)
	prefix := rs.Prefix()
	a := startNode(t, rs, prefix)
	b, openGate := gatedNode(t, rs, prefix)

	pid, reconnect := sioCut(t, a)
	for i := 2; i <= 3; i++ {
		if st, body := a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":`+strconv.Itoa(i)+`}`); st != 200 {
			t.Fatalf("publish %d: %d %v", i, st, body)
		}
	}

	// Over WebSocket: the connection ends (Engine.IO close, WebSocket close
	// 4010), with nothing before.
	w := b.dialSIO()
	w.send(reconnect)
	for {
		_ = w.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, msg, err := w.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4010 {
				t.Fatalf("connection ended with %v, want close 4010", err)
			}
			break
		}
		if p := string(msg); p != "1" && p != "2" { // the Engine.IO close, a ping
			t.Fatalf("recovery before the broker is live: got %q, want the connection closed and nothing else", p)
		}
	}
	// Over polling: the Engine.IO session is closed. A poll held when it
	// closes gets the close packet; one that comes after, the unknown
	// session (socket.io-client reconnects on either).
	pl := handshakeSIO(t, b)
	type answer struct {
		code int
		body string
	}
	polled := make(chan answer, 1)
	poll := func() { // on a goroutine of its own, to be held when the session closes
		res, err := http.Get(b.httpURL("/socket.io/?EIO=4&transport=polling" + pl.q))
		if err != nil {
			polled <- answer{0, err.Error()}
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		polled <- answer{res.StatusCode, string(body)}
	}
	go poll()
	pl.post(reconnect)
	for closed := false; !closed; {
		got := <-polled
		if got.code == 400 && strings.Contains(got.body, "Session ID unknown") {
			break
		}
		for _, p := range strings.Split(got.body, "\x1e") {
			switch p {
			case "1":
				closed = true
			case "2", "6":
			default:
				t.Fatalf("recovery over polling before the broker is live: got %d %q, want the session closed", got.code, p)
			}
		}
		if !closed {
			go poll()
		}
	}
	// A native subscribe with since: unavailable, retry.
	n := b.dial("ana", "42")
	n.send(map[string]any{"type": "subscribe", "channel": "org:42", "id": 1, "since": map[string]any{"offset": 1, "epoch": "e"}})
	n.expectError("unavailable")
	n.conn.Close()
	if !containsLine(b.metricsText(), `herald_socketio_recovery_retries_total 2`) {
		t.Error("the two deferred recoveries are not counted")
	}

	openGate()
	r := b.dialSIO()
	r.send(reconnect)
	if p := r.read(); !strings.HasPrefix(p, `40{"sid":"`) || !strings.Contains(p, `"pid":"`+pid+`"`) {
		t.Fatalf("connect answer once live %q, want pid %s (recovered)", p, pid)
	}
	for i := 2; i <= 3; i++ {
		if p := r.readUntil(`42["message"`); !strings.Contains(p, `"data":`+strconv.Itoa(i)+`,`) {
			t.Fatalf("replay %d: %q", i, p)
		}
	}
}

// A recovery refused as unavailable by a broker that serves (a refusal of
// the channel's own, here a Redis user that may not read its keys) is not
// retried, which would not change it: the socket connects with a new pid
// (socket.recovered === false), rather than reconnecting for ever.
func TestSocketIORecoveryRefusedByALiveBrokerIsLost(t *testing.T) {
	rs := sharedRedis(t)
	prefix := rs.Prefix()
	rc := rs.Client()
	defer rc.Close()
	user := "sio-" + prefix
	if err := rc.Do(context.Background(), "ACL", "SETUSER", user, "on", ">pw", "resetkeys",
		"~"+prefix+":instance", "~"+prefix+":i:*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	a := startNode(t, rs, prefix)
	pid, reconnect := sioCut(t, a)
	b := start(t, func(c *config.Config) {
		c.Broker, c.RedisURL, c.RedisPrefix = "redis", "unix://"+user+":pw@"+rs.Socket, prefix
	})
	eventually(t, 20*time.Second, "the node's broker live", func() bool {
		st, _ := b.api("GET", "/healthz", "", "")
		return st == 200
	})
	r := b.dialSIO()
	r.send(reconnect)
	if p := r.readUntil("40"); !strings.HasPrefix(p, `40{"sid":"`) || strings.Contains(p, `"pid":"`+pid+`"`) {
		t.Fatalf("connect answer %q, want a new pid (not recovered)", p)
	}
	if !containsLine(b.metricsText(), `herald_socketio_recovery_retries_total 0`) {
		t.Error("a refusal by a live broker was retried")
	}
}

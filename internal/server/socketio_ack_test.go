package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/transport/socketio"
)

// sioPolling is a Socket.IO socket over Engine.IO long-polling, spoken by
// hand: what socket.io-client sends, packet by packet.
type sioPolling struct {
	t  *testing.T
	ts *testServer
	q  string // the query naming the session
}

// handshakeSIO opens an Engine.IO session over polling; nothing is
// connected yet.
func handshakeSIO(t *testing.T, ts *testServer) *sioPolling {
	t.Helper()
	s := &sioPolling{t: t, ts: ts}
	code, body := s.do("GET", "")
	if code != 200 || !strings.HasPrefix(body, `0{"sid":"`) {
		t.Fatalf("handshake %d %q", code, body)
	}
	sid := body[len(`0{"sid":"`):]
	s.q = "&sid=" + sid[:strings.IndexByte(sid, '"')]
	return s
}

// openSIO opens an Engine.IO session and connects "/" with a token for
// user/org; the CONNECT answer has been read.
func openSIO(t *testing.T, ts *testServer, user, org string) *sioPolling {
	t.Helper()
	s := handshakeSIO(t, ts)
	s.post(`40{"token":"` + token(t, user, org) + `"}`)
	if body := s.poll(); !strings.HasPrefix(body, `40{"sid":"`) {
		t.Fatalf("connect answer %q", body)
	}
	return s
}

func (s *sioPolling) do(method, body string) (int, string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.ts.httpURL("/socket.io/?EIO=4&transport=polling"+s.q), strings.NewReader(body))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// post sends Engine.IO packets (joined by the payload separator).
func (s *sioPolling) post(packets ...string) {
	s.t.Helper()
	if code, body := s.do("POST", strings.Join(packets, "\x1e")); code != 200 {
		s.t.Fatalf("post: %d %s", code, body)
	}
}

// poll returns the next payload (packets joined by the separator).
func (s *sioPolling) poll() string {
	s.t.Helper()
	code, body := s.do("GET", "")
	if code != 200 {
		s.t.Fatalf("poll: %d %s", code, body)
	}
	return body
}

// TestSocketIOAPIDisconnect: POST /api/disconnect reaches a Socket.IO socket
// as the Socket.IO DISCONNECT packet alone (after which socket.io-client does
// not reconnect, and closes the Engine.IO session itself); once the client
// closes, its hub client is gone.
func TestSocketIOAPIDisconnect(t *testing.T) {
	ts := start(t, nil)
	s := openSIO(t, ts, "dana", "42")
	if code, m := ts.api("POST", "/api/disconnect", testAPIKey, `{"userId":"dana"}`); code != 200 || m["disconnected"] != float64(1) {
		t.Fatalf("disconnect: %d %v", code, m)
	}
	if got := s.poll(); got != "41" {
		t.Fatalf("after the API disconnect the socket got %q, want the DISCONNECT packet", got)
	}
	s.post("1")
	eventually(t, 10*time.Second, "the hub client to go", func() bool { return ts.srv.Hub().NumClients() == 0 })
}

// emitAsync calls POST /api/emit in the background; the answer comes on
// the returned channel.
func emitAsync(ts *testServer, body string) <-chan map[string]any {
	ch := make(chan map[string]any, 1)
	go func() {
		req, _ := http.NewRequest("POST", ts.httpURL("/api/emit"), strings.NewReader(body))
		req.Header.Set("X-API-Key", testAPIKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- map[string]any{"error": err.Error()}
			return
		}
		defer res.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
			m = map[string]any{"error": err.Error()}
		}
		m["status"] = float64(res.StatusCode)
		ch <- m
	}()
	return ch
}

// events polls until n packets of emitted events arrived and returns their
// ack ids and arguments ("[…]" after the id).
func (s *sioPolling) events(n int) (ids []string, args []string) {
	s.t.Helper()
	for len(ids) < n {
		for _, pkt := range strings.Split(s.poll(), "\x1e") {
			if pkt == "2" {
				s.post("3") // Engine.IO's heartbeat
			}
			if !strings.HasPrefix(pkt, "42") {
				continue
			}
			rest := pkt[2:]
			i := strings.IndexByte(rest, '[')
			if i <= 0 {
				s.t.Fatalf("emitted event without an ack id: %q", pkt)
			}
			ids, args = append(ids, rest[:i]), append(args, rest[i:])
		}
	}
	return ids, args
}

func socketIDs(t *testing.T, v any) []string {
	t.Helper()
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("not a list: %v", v)
	}
	var out []string
	for _, e := range list {
		out = append(out, e.(map[string]any)["socket"].(string))
	}
	return out
}

// TestSocketIOEmitWithAck: POST /api/emit reaches every Socket.IO socket
// of the user with an ack id, and answers with each socket's ack
// arguments, the sockets that did not answer in time, and the ones it
// could not ask; a late ACK is dropped and counted, an ACK for an id never
// sent ends the session; pending acks per socket are bounded, ids never
// reused.
func TestSocketIOEmitWithAck(t *testing.T) {
	ts := start(t, nil)
	native := ts.dial("erin", "42") // a native client of the user: sent nothing
	a := openSIO(t, ts, "erin", "42")
	b := openSIO(t, ts, "erin", "42")
	openSIO(t, ts, "frank", "42") // another user's socket: not asked

	// Both answer: the call returns with both acks, before its timeout.
	res := emitAsync(ts, `{"userId":"erin","event":"confirm","data":{"q":1},"timeoutMs":30000}`)
	for i, s := range []*sioPolling{a, b} {
		ids, args := s.events(1)
		if args[0] != `["confirm",{"q":1}]` {
			t.Fatalf("socket %d got %s", i, args[0])
		}
		s.post(`43` + ids[0] + `[{"ok":true,"n":` + string(rune('0'+i)) + `}]`)
	}
	m := <-res
	if m["status"] != float64(200) || m["sockets"] != float64(2) || len(m["acks"].([]any)) != 2 || len(m["timedOut"].([]any)) != 0 || len(m["failed"].([]any)) != 0 {
		t.Fatalf("emit answered %v", m)
	}
	for _, e := range m["acks"].([]any) {
		ack := e.(map[string]any)
		args, _ := json.Marshal(ack["args"])
		if string(args) != `[{"n":0,"ok":true}]` && string(args) != `[{"n":1,"ok":true}]` || ack["clientId"] == "" {
			t.Fatalf("ack %v", ack)
		}
	}

	// b does not answer: it times out, a's ack comes back; b's late ACK is
	// dropped and counted, and b's session goes on.
	res = emitAsync(ts, `{"userId":"erin","event":"confirm","timeoutMs":300}`)
	ids, args := a.events(1)
	if args[0] != `["confirm"]` {
		t.Fatalf("an emit without data: %s", args[0])
	}
	a.post(`43` + ids[0] + `["yes"]`)
	late, _ := b.events(1)
	m = <-res
	if len(m["acks"].([]any)) != 1 || len(m["timedOut"].([]any)) != 1 {
		t.Fatalf("emit with one silent socket answered %v", m)
	}
	b.post(`43` + late[0] + `["too late"]`)
	eventually(t, 10*time.Second, "the late ack to be counted", func() bool {
		return containsLine(ts.metricsText(), `herald_socketio_errors_total{kind="sio_late_ack"} 1`)
	})

	// Pending acks per socket are bounded: b owes 64, the 65th emit is not
	// sent to it; answering the 64 (ids all distinct) ends their calls.
	var calls []<-chan map[string]any
	for range socketio.MaxPendingAcks {
		calls = append(calls, emitAsync(ts, `{"userId":"erin","event":"bulk","timeoutMs":30000}`))
	}
	aIDs, _ := a.events(socketio.MaxPendingAcks)
	bIDs, _ := b.events(socketio.MaxPendingAcks)
	m = <-emitAsync(ts, `{"userId":"erin","event":"bulk","timeoutMs":1}`)
	failed := m["failed"].([]any)
	if len(failed) != 2 || failed[0].(map[string]any)["code"] != "too_many_pending" {
		t.Fatalf("the 65th emit answered %v", m)
	}
	seen := map[string]bool{late[0]: true}
	var acks []string
	for _, id := range bIDs {
		if seen[id] {
			t.Fatalf("ack id %s reused", id)
		}
		seen[id] = true
		acks = append(acks, `43`+id+`[1]`)
	}
	b.post(acks...)
	acks = acks[:0]
	for _, id := range aIDs {
		acks = append(acks, `43`+id+`[1]`)
	}
	a.post(acks...)
	for _, c := range calls {
		if m := <-c; len(m["acks"].([]any)) != 2 {
			t.Fatalf("a bulk emit answered %v", m)
		}
	}

	// A socket that ends while an emit waits is reported disconnected.
	res = emitAsync(ts, `{"userId":"erin","event":"confirm","timeoutMs":30000}`)
	ids, _ = a.events(1)
	b.events(1)
	b.post("1")
	a.post(`43` + ids[0] + `[2]`)
	m = <-res
	if got := socketIDs(t, m["failed"]); len(got) != 1 || m["failed"].([]any)[0].(map[string]any)["code"] != "disconnected" || len(m["acks"].([]any)) != 1 {
		t.Fatalf("emit to a socket that left answered %v", m)
	}

	// An answer with binary attachments is refused: binary_unsupported.
	res = emitAsync(ts, `{"userId":"erin","event":"confirm","timeoutMs":30000}`)
	ids, _ = a.events(1)
	a.post(`461-`+ids[0]+`[{"_placeholder":true,"num":0}]`, "bAQID")
	m = <-res
	if f := m["failed"].([]any); len(f) != 1 || f[0].(map[string]any)["code"] != "binary_unsupported" {
		t.Fatalf("a binary ack answered %v", m)
	}

	// An ACK for an id never sent ends the session.
	a.post(`4399999[1]`)
	if code, _ := a.do("GET", ""); code != 400 {
		t.Fatalf("poll after an ACK for an id never sent: %d", code)
	}
	if !containsLine(ts.metricsText(), `herald_socketio_errors_total{kind="sio_bad_ack"} 1`) {
		t.Error("the bad ACK is not counted")
	}
	if !containsLine(ts.metricsText(), `herald_socketio_emits_total{result="acked"}`) || !containsLine(ts.metricsText(), `herald_socketio_emits_total{result="timeout"} 1`) {
		t.Error("emits not counted")
	}
	native.sync() // a ping answered by its pong, with nothing before it: the emits reached Socket.IO sockets only
}

// TestSocketIOEmitRefusals: /api/emit's bad requests, a user without
// sockets, and a server without Socket.IO.
func TestSocketIOEmitRefusals(t *testing.T) {
	ts := start(t, nil)
	for body, want := range map[string]int{
		`{"event":"x"}`:                                400,
		`{"userId":"u","event":""}`:                    400,
		`{"userId":"u","event":"disconnect"}`:          400,
		`{"userId":"u","event":"herald:rooms"}`:        400,
		`{"userId":"u","event":"x","timeoutMs":0}`:     400,
		`{"userId":"u","event":"x","timeoutMs":-5}`:    400,
		`{"userId":"u","event":"x","timeoutMs":30001}`: 400,
	} {
		if code, m := ts.api("POST", "/api/emit", testAPIKey, body); code != want {
			t.Errorf("%s: %d %v", body, code, m)
		}
	}
	if code, _ := ts.api("POST", "/api/emit", "wrong", `{"userId":"u","event":"x"}`); code != 401 {
		t.Errorf("bad key: %d", code)
	}
	if code, m := ts.api("POST", "/api/emit", testAPIKey, `{"userId":"nobody","event":"x"}`); code != 200 || m["sockets"] != float64(0) {
		t.Errorf("no sockets: %d %v", code, m)
	}
	off := start(t, func(c *config.Config) { c.SocketIOPath = "" })
	if code, m := off.api("POST", "/api/emit", testAPIKey, `{"userId":"u","event":"x"}`); code != 404 {
		t.Errorf("without Socket.IO: %d %v", code, m)
	}
}

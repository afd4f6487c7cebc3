package server_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
)

// upgradeSIO upgrades s, a polling socket nothing polls meanwhile, to
// WebSocket as socket.io-client does: the probe, one last poll (whose
// packets it returns), then the upgrade packet.
func upgradeSIO(t *testing.T, ts *testServer, s *sioPolling) (*sioWS, []string) {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+ts.addr+"/socket.io/?EIO=4&transport=websocket"+s.q, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &sioWS{t: t, conn: conn}
	c.send("2probe")
	if p := c.read(); p != "3probe" {
		t.Fatalf("probe answer %q", p)
	}
	polled := strings.Split(s.poll(), "\x1e")
	c.send("5")
	return c, polled
}

// tick is the data of a publication in these tests: its number.
func tickOf(t *testing.T, pkt string) (n int, offset uint64) {
	t.Helper()
	var args []json.RawMessage
	if err := json.Unmarshal([]byte(strings.TrimPrefix(pkt, "42")), &args); err != nil || len(args) < 2 {
		t.Fatalf("delivery %q: %v", pkt, err)
	}
	var m struct {
		Data   int
		Offset uint64
	}
	if err := json.Unmarshal(args[1], &m); err != nil {
		t.Fatalf("delivery %q: %v", pkt, err)
	}
	return m.Data, m.Offset
}

// TestSocketIOUpgradeToDirect: a socket that opened on long-polling and
// upgraded to WebSocket while publications flowed gets each of them once
// and in order across the switch, and from then on is a direct socket: no
// Engine.IO session (its sid is unknown to polling) and no goroutine of
// its own; the hub's Engine.IO pings, an emit with its ack, and the
// DISCONNECT of /api/disconnect reach it over the WebSocket.
func TestSocketIOUpgradeToDirect(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.PingInterval, c.PongTimeout = 200*time.Millisecond, 5*time.Second })
	s := openSIO(t, ts, "ugo", "42")
	base := ts.srv.ConnGoroutines() // the server's own: a polling socket has none
	s.post(`421["subscribe","org:42"]`)
	for got := ""; !strings.Contains(got, `431[{"ok":true`); {
		got = s.poll()
	}

	const n = 300
	published := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			req, _ := http.NewRequest("POST", ts.httpURL("/api/publish"), strings.NewReader(fmt.Sprintf(`{"channel":"org:42","event":"tick","data":%d}`, i)))
			req.Header.Set("X-API-Key", testAPIKey)
			res, err := http.DefaultClient.Do(req)
			if err == nil {
				res.Body.Close()
				if res.StatusCode != 200 {
					err = fmt.Errorf("publish %d: status %d", i, res.StatusCode)
				}
			}
			if err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()

	var got []int
	var last uint64
	take := func(pkt string) {
		if !strings.HasPrefix(pkt, `42["tick"`) {
			return
		}
		v, off := tickOf(t, pkt)
		if off <= last {
			t.Fatalf("offset %d after %d", off, last)
		}
		last = off
		got = append(got, v)
	}
	for len(got) < 20 { // some arrive over polling
		for _, pkt := range strings.Split(s.poll(), "\x1e") {
			if pkt == "2" {
				s.post("3")
			}
			take(pkt)
		}
	}
	c, polled := upgradeSIO(t, ts, s)
	for _, pkt := range polled {
		take(pkt)
	}
	for len(got) < n {
		pkt := c.read()
		if pkt == "2" {
			c.send("3")
		}
		take(pkt)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("delivery %d carries %d: lost, duplicated or reordered across the upgrade (%v)", i+1, v, got)
		}
	}

	// The Engine.IO session is gone, and with it the socket's goroutines.
	if code, body := s.do("GET", ""); code != http.StatusBadRequest || !strings.Contains(body, `"code":1`) {
		t.Fatalf("a poll of the upgraded session: %d %s, want the unknown session", code, body)
	}
	eventually(t, 10*time.Second, "no goroutine for the upgraded socket but the poller's", func() bool { return ts.srv.ConnGoroutines() == base+watchGoroutines })
	if n := ts.srv.Hub().NumClients(); n != 1 {
		t.Fatalf("%d hub clients, want 1", n)
	}

	// The hub's heartbeat pings it now.
	c.readUntil("2")
	c.send("3")
	// An emit with an ack, answered over the WebSocket.
	res := emitAsync(ts, `{"userId":"ugo","event":"confirm","data":{"q":1},"timeoutMs":30000}`)
	p := c.readUntil(`42`)
	for p == "2" || strings.HasPrefix(p, `42["tick"`) {
		p = c.read()
	}
	i := strings.IndexByte(p, '[')
	if i <= 2 || p[i:] != `["confirm",{"q":1}]` {
		t.Fatalf("emit %q", p)
	}
	c.send(`43` + p[2:i] + `["yes"]`)
	if m := <-res; m["status"] != float64(200) || len(m["acks"].([]any)) != 1 {
		t.Fatalf("emit answered %v", m)
	}
	// Its acks to the client's own events, and a filter set on the way.
	c.send(`423["subscribe","org:42",{"events":["other"]}]`)
	if p := c.readUntil("433"); !strings.Contains(p, `"ok":true`) {
		t.Fatalf("subscribe with a filter %q", p)
	}

	// /api/disconnect: the DISCONNECT packet, then the socket ends.
	if code, m := ts.api("POST", "/api/disconnect", testAPIKey, `{"userId":"ugo"}`); code != 200 || m["disconnected"] != float64(1) {
		t.Fatalf("disconnect: %d %v", code, m)
	}
	for {
		p := c.read()
		if p == "41" {
			break
		}
		if strings.HasPrefix(p, `42["tick"`) {
			t.Fatalf("a publication the filter refuses: %q", p)
		}
	}
	c.send("1")
	c.conn.Close()
	eventually(t, 10*time.Second, "the hub client to go", func() bool { return ts.srv.Hub().NumClients() == 0 })
}

// TestSocketIOUpgradedRecovers: a socket cut after its upgrade recovers
// what was published meanwhile with its pid and last offset, as any
// direct socket does.
func TestSocketIOUpgradedRecovers(t *testing.T) {
	ts := start(t, nil)
	s := handshakeSIO(t, ts)
	s.post(`40{"token":"` + token(t, "vic", "42") + `"}`)
	pid := connectedPID(t, s.poll())
	c, _ := upgradeSIO(t, ts, s)
	offset := joinAndCut(t, ts, c)
	eventually(t, 10*time.Second, "the cut socket's hub client to go", func() bool { return ts.srv.Hub().NumClients() == 0 })
	for i := 2; i <= 3; i++ {
		if st, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":`+strconv.Itoa(i)+`}`); st != 200 {
			t.Fatalf("publish: %d %v", st, body)
		}
	}
	d := ts.dialSIO()
	d.send(`40{"token":"` + token(t, "vic", "42") + `","pid":"` + pid + `","offset":` + strconv.Quote(offset) + `}`)
	var got []string
	for len(got) < 3 {
		p := d.read()
		if strings.HasPrefix(p, "40") || strings.HasPrefix(p, `42["message"`) {
			got = append(got, p)
		}
	}
	if !strings.Contains(got[0], `"pid":"`+pid+`"`) {
		t.Fatalf("recovery answered %q, want the same pid", got[0])
	}
	for i, p := range got[1:] {
		if !strings.Contains(p, `"data":`+strconv.Itoa(i+2)) {
			t.Fatalf("recovered %q, want publication %d", p, i+2)
		}
	}
}

// TestSocketIOUpgradedSlowConsumer: an upgraded socket that stops reading
// is closed as a slow consumer by its hub client (4008, counted), as a
// direct socket is; publishers never wait for it.
func TestSocketIOUpgradedSlowConsumer(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.ClientQueueBytes = 128 << 10 })
	s := openSIO(t, ts, "sam", "42")
	c, _ := upgradeSIO(t, ts, s)
	c.send(`421["subscribe","org:42"]`)
	if p := c.readUntil("431"); !strings.Contains(p, `"ok":true`) {
		t.Fatalf("subscribe %q", p)
	}
	payload := `"` + strings.Repeat("x", 8000) + `"`
	const max = 3000 // 24 MB: far more than socket buffers and the queue hold
	sent := 0
	for ; sent < max && ts.srv.Hub().NumClients() == 1; sent++ {
		if st, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":`+payload+`}`); st != 200 {
			t.Fatalf("publish %d: %d %v", sent, st, body)
		}
	}
	if sent == max {
		t.Fatal("slow consumer never cut off")
	}
	// Publishers did not wait on the socket: what they sent piled up in its
	// queue until the queue's bound cut it off (a publisher that waited for
	// its writes would never fill the queue; the socket would end by the
	// stuck-write check instead, not counted as a slow consumer).
	if !containsLine(ts.metricsText(), "herald_slow_consumer_closes_total 1") {
		t.Fatal("slow consumer close not counted")
	}
	// The socket ends: 4008 if the close frame could still be written,
	// otherwise an abnormal close.
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok && ce.Code != 4008 {
			t.Fatalf("close code %d, want 4008", ce.Code)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the slow socket was not closed")
		}
		break
	}
}

package server_test

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/uring"
)

// TestSlowConsumerClosed: a subscriber that stops reading is cut off once its
// queue passes --client-queue-bytes, while a healthy subscriber gets every
// message and the publisher never waits.
// It runs with each of the writer pool's ways of writing: io_uring (the
// default where the kernel has it) and one writev per client.
func TestSlowConsumerClosed(t *testing.T) {
	for _, ioUring := range []bool{true, false} {
		t.Run(fmt.Sprintf("io_uring=%v", ioUring), func(t *testing.T) { testSlowConsumerClosed(t, ioUring) })
	}
}

func testSlowConsumerClosed(t *testing.T, ioUring bool) {
	ts := start(t, func(c *config.Config) { c.ClientQueueBytes = 128 << 10; c.IOUring = ioUring })
	// The slow client stops reading after subscribing.
	slow := ts.dial("slow", "")
	slow.subscribe("feed")
	fast := ts.dial("fast", "")
	fast.subscribe("feed")

	payload := `"` + strings.Repeat("x", 8000) + `"`
	const max = 3000 // 24 MB: far more than socket buffers and the queue hold
	sent := 0
	for ; sent < max && ts.srv.Hub().NumClients() == 2; sent++ {
		status, body := ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"feed","data":{"seq":%d,"pad":%s}}`, sent, payload))
		if status != 200 {
			t.Fatalf("publish %d: %d %v", sent, status, body)
		}
		// The healthy subscriber receives every publication, in order,
		// while the slow one is still connected: publishers do not wait on
		// it.
		m := fast.expect("message")
		if seq := m["data"].(map[string]any)["seq"]; seq != float64(sent) {
			t.Fatalf("fast got seq %v, want %d", seq, sent)
		}
	}
	if sent == max {
		t.Fatal("slow consumer never cut off")
	}
	eventually(t, 10*time.Second, "slow client removed", func() bool { return ts.srv.Hub().NumClients() == 1 })
	if !containsLine(ts.metricsText(), "herald_slow_consumer_closes_total 1") {
		t.Fatal("slow consumer close not counted")
	}
	// The healthy subscriber keeps receiving after the cut.
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"feed","data":"after"}`)
	if m := fast.expect("message"); m["data"] != "after" {
		t.Fatalf("fast got %v", m)
	}
	// The slow client sees its connection end (4008 if the close frame could
	// still be written, otherwise an abnormal close).
	code := slow.expectClose(10 * time.Second)
	if code != protocol.CloseSlowConsumer && code != websocket.CloseAbnormalClosure {
		t.Fatalf("slow client close code %d", code)
	}
}

func TestRateLimit(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.RateLimit = 5; c.RateBurst = 5; c.RateLimitStrikes = 20 })
	a := ts.dial("alice", "")
	for i := 0; i < 5; i++ {
		a.send(map[string]any{"type": "ping"})
	}
	a.send(map[string]any{"type": "ping"})
	for i := 0; i < 5; i++ {
		a.expect("pong")
	}
	a.expectError("rate_limited")
	// Sustained abuse closes the connection.
	for i := 0; i < 40; i++ {
		if err := a.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)); err != nil {
			break
		}
	}
	if code := a.expectClose(5 * time.Second); code != protocol.CloseRateLimited {
		t.Fatalf("close code %d, want %d", code, protocol.CloseRateLimited)
	}
	if !containsLine(ts.metricsText(), "herald_rate_limited_total") {
		t.Fatal("no rate-limit metric")
	}
}

// TestRateLimitCountsBinaryFrames: binary frames, which herald answers with
// an error, count against the rate limit like commands: a flood of them is
// limited and then closed with 4029, not answered one by one.
func TestRateLimitCountsBinaryFrames(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.RateLimit, c.RateBurst, c.RateLimitStrikes = 1, 2, 3 })
	a := ts.dial("alice", "")
	for range 20 {
		if err := a.conn.WriteMessage(websocket.BinaryMessage, []byte{1}); err != nil {
			break
		}
	}
	a.expectError("binary_not_supported")
	a.expectError("binary_not_supported")
	a.expectError("rate_limited")
	a.expectError("rate_limited")
	if code := a.expectClose(5 * time.Second); code != protocol.CloseRateLimited {
		t.Fatalf("close code %d, want %d", code, protocol.CloseRateLimited)
	}
}

// TestRateLimitCountsPings: a client's pings count against the rate limit
// like commands: a flood of them is answered with pongs only up to the
// burst, then limited and closed with 4029.
func TestRateLimitCountsPings(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.RateLimit, c.RateBurst, c.RateLimitStrikes = 1, 2, 3 })
	a := ts.dial("alice", "")
	pongs := 0
	a.conn.SetPongHandler(func(string) error { pongs++; return nil })
	for range 20 {
		if err := a.conn.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
			break
		}
	}
	a.expectError("rate_limited")
	a.expectError("rate_limited")
	if code := a.expectClose(5 * time.Second); code != protocol.CloseRateLimited {
		t.Fatalf("close code %d, want %d", code, protocol.CloseRateLimited)
	}
	if pongs != 2 {
		t.Fatalf("%d pongs, want 2 (the burst)", pongs)
	}
}

// startPinging starts a server that pings every ping and closes a
// connection silent for pong.
func startPinging(t *testing.T, ping, pong time.Duration) *testServer {
	return start(t, func(c *config.Config) { c.PingInterval, c.PongTimeout = ping, pong })
}

// answerPings makes c answer the server's pings (while something reads c)
// and counts them.
func answerPings(c *wsClient) *atomic.Int32 {
	var pings atomic.Int32
	c.conn.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	return &pings
}

func TestHeartbeat(t *testing.T) {
	// The pong timeout leaves the live client's reader room on a loaded
	// machine; the dead client is still removed within a few seconds.
	ts := startPinging(t, 50*time.Millisecond, 1500*time.Millisecond)
	// A reading client answers pings and stays.
	live := ts.dial("live", "")
	live.subscribe("chat")
	pings := answerPings(live)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			if _, _, err := live.conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	// A client that never reads never answers pings and is removed from its channels.
	dead := ts.dial("dead", "")
	dead.subscribe("chat")
	eventually(t, 20*time.Second, "dead client removed", func() bool {
		return ts.srv.Hub().NumClients() == 1
	})
	time.Sleep(3 * time.Second) // the live client survives two timeouts
	if ts.srv.Hub().NumClients() != 1 {
		t.Fatal("live client was closed")
	}
	st := ts.srv.Hub().Stats(true)
	if len(st.Channels) != 1 || st.Channels[0].Subscribers != 1 {
		t.Fatalf("channels after timeout: %+v", st.Channels)
	}
	live.conn.Close()
	<-readerDone
	if pings.Load() == 0 {
		t.Fatal("no WebSocket ping received")
	}
}

func TestGracefulShutdown(t *testing.T) {
	ts := start(t, nil)
	var clients []*wsClient
	for i := 0; i < 5; i++ {
		c := ts.dial(fmt.Sprintf("u%d", i), "")
		c.subscribe("chat")
		clients = append(clients, c)
	}
	// Queued messages are flushed before the close frame.
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"chat","data":"last words"}`)
	errc := make(chan error, 1)
	go func() { errc <- ts.stop() }()
	for _, c := range clients {
		if m := c.expect("message"); m["data"] != "last words" {
			t.Fatalf("got %v", m)
		}
		if code := c.expectClose(5 * time.Second); code != websocket.CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

// uringAvailable reports whether the kernel gives an io_uring here; where
// HERALD_REQUIRE_IO_URING is set (CI) it must.
func uringAvailable(t *testing.T) bool {
	r, err := uring.New(1)
	if err != nil {
		if os.Getenv("HERALD_REQUIRE_IO_URING") != "" {
			t.Fatalf("io_uring required: %v", err)
		}
		return false
	}
	r.Close()
	return true
}

// TestManyConcurrentPublishers: every subscriber receives every message of
// several concurrent publishers, with each of the writer pool's ways of
// writing.
func TestManyConcurrentPublishers(t *testing.T) {
	for _, ioUring := range []bool{true, false} {
		t.Run(fmt.Sprintf("io_uring=%v", ioUring), func(t *testing.T) { testManyConcurrentPublishers(t, ioUring) })
	}
}

func testManyConcurrentPublishers(t *testing.T, ioUring bool) {
	ts := start(t, func(c *config.Config) { c.IOUring = ioUring })
	// Each worker reports how it writes once it has started.
	want := "herald_writer_io_uring_workers 0"
	if ioUring && uringAvailable(t) {
		want = fmt.Sprintf("herald_writer_io_uring_workers %d", max(2, runtime.GOMAXPROCS(0)))
	}
	eventually(t, 5*time.Second, want, func() bool { return containsLine(ts.metricsText(), want) })
	const subs, pubs, each = 5, 4, 50
	var readers []*wsClient
	for i := 0; i < subs; i++ {
		c := ts.dial(fmt.Sprintf("s%d", i), "")
		c.subscribe("load")
		readers = append(readers, c)
	}
	var wg sync.WaitGroup
	for p := 0; p < pubs; p++ {
		c := ts.dial(fmt.Sprintf("p%d", p), "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				b := fmt.Appendf(nil, `{"type":"message","channel":"load","data":%d}`, i)
				if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range readers {
		for i := 0; i < pubs*each; i++ {
			r.expect("message")
		}
	}
}

// TestControlFramesAloneKeepConnection: a client that sends nothing but
// control frames — pongs to the server's pings, pings of its own — stays
// connected for many pong timeouts. Each control frame is handled on its own;
// the reader does not stay on the socket waiting for a data frame (it once
// did, with the frame deadline running, and dropped such clients).
func TestControlFramesAloneKeepConnection(t *testing.T) {
	ts := startPinging(t, 50*time.Millisecond, 400*time.Millisecond)
	c := ts.dial("quiet", "")
	pings := answerPings(c)
	var pongs atomic.Int32
	c.conn.SetPongHandler(func(string) error { pongs.Add(1); return nil })
	msgs := make(chan map[string]any, 16)
	readErr := make(chan error, 1)
	go func() {
		for {
			var m map[string]any
			if err := c.conn.ReadJSON(&m); err != nil {
				readErr <- err
				return
			}
			msgs <- m
		}
	}()
	stop := time.Now().Add(1500 * time.Millisecond) // almost four pong timeouts
	for time.Now().Before(stop) {
		if err := c.conn.WriteControl(websocket.PingMessage, []byte("c"), time.Now().Add(time.Second)); err != nil {
			t.Fatalf("client ping: %v", err)
		}
		select {
		case err := <-readErr:
			t.Fatalf("connection ended with only control frames sent: %v (%d server pings)", err, pings.Load())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if pings.Load() < 10 || pongs.Load() < 5 {
		t.Fatalf("%d pings from the server and %d pongs to the client's pings", pings.Load(), pongs.Load())
	}
	if err := c.conn.WriteJSON(map[string]any{"type": "ping"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if m["type"] != "pong" {
			t.Fatalf("got %v, want pong", m)
		}
	case err := <-readErr:
		t.Fatalf("read: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("no pong to a ping command")
	}
}

// TestStalledFrameClosed: a client that begins a frame and never finishes it
// is closed with 4002 once --pong-timeout passes, like a silent one.
func TestStalledFrameClosed(t *testing.T) {
	ts := startPinging(t, 100*time.Millisecond, 400*time.Millisecond)
	c := ts.dial("stall", "")
	c.conn.SetPingHandler(func(string) error { return nil }) // a pong would be taken as the frame's rest
	// A masked text frame header announcing 5 bytes, then nothing more.
	if _, err := c.conn.UnderlyingConn().Write([]byte{0x81, 0x85, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if code := c.expectClose(3 * time.Second); code != protocol.CloseNoPong {
		t.Fatalf("close code %d, want %d", code, protocol.CloseNoPong)
	}
}

// TestLargestMessageReachesPlainSubscriber: a message of the largest size
// the server accepts is delivered to an idle subscriber without compression,
// though with its envelope it is larger than --client-queue-bytes.
func TestLargestMessageReachesPlainSubscriber(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxMessageBytes, c.ClientQueueBytes = 64<<10, 64<<10 })
	a := ts.dial("alice", "")
	a.subscribe("big")
	data := `"` + strings.Repeat("x", 64<<10-2) + `"`
	if code, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"big","data":`+data+`}`); code != 200 || body["delivered"] != float64(1) {
		t.Fatalf("publish: %d %v", code, body)
	}
	if m := a.expect("message"); len(m["data"].(string)) != 64<<10-2 {
		t.Fatalf("got %d bytes", len(m["data"].(string)))
	}
}

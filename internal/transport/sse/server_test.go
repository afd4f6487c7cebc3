package sse_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/server/servertest"
)

// event is one event as an EventSource dispatches it, its data decoded.
type event struct {
	Name string
	Data map[string]any
	ID   string // the last event id after it
}

// streamReader reads an event stream as EventSource does (for what herald
// writes: LF line ends).
type streamReader struct {
	t      *testing.T
	resp   *http.Response
	br     *bufio.Reader
	lastID string
	// Comments counts comment lines (heartbeats).
	Comments int
}

func token(t *testing.T, user, org string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(servertest.Secret), auth.Identity{UserID: user, OrgID: org}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// open requests a stream of channels with tok (Authorization) and lastID
// (Last-Event-ID, if any); it returns the response, read or not.
func open(t *testing.T, srv *servertest.Server, tok, lastID string, channels ...string) *http.Response {
	t.Helper()
	q := url.Values{}
	for _, c := range channels {
		q.Add("channel", c)
	}
	req, _ := http.NewRequest("GET", "http://"+srv.Addr+"/sse?"+q.Encode(), nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func stream(t *testing.T, srv *servertest.Server, tok, lastID string, channels ...string) *streamReader {
	t.Helper()
	resp := open(t, srv, tok, lastID, channels...)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream refused: %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content type %q", ct)
	}
	return &streamReader{t: t, resp: resp, br: bufio.NewReader(resp.Body), lastID: lastID}
}

// next returns the next event, failing the test after 10 s (a bound, not
// a measure) or at the end of the stream.
func (s *streamReader) next() event {
	s.t.Helper()
	ev, err := s.read()
	if err != nil {
		s.t.Fatalf("reading the stream: %v", err)
	}
	return ev
}

func (s *streamReader) read() (event, error) {
	timer := time.AfterFunc(10*time.Second, func() { s.resp.Body.Close() })
	defer timer.Stop()
	var name string
	var data []string
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			return event{}, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data == nil {
				continue
			}
			if name == "" {
				name = "message"
			}
			ev := event{Name: name, ID: s.lastID}
			if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &ev.Data); err != nil {
				s.t.Fatalf("event data is not JSON: %q", data)
			}
			return ev, nil
		case line[0] == ':':
			s.Comments++
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				name = value
			case "data":
				data = append(data, value)
			case "id":
				s.lastID = value
			case "retry":
			default:
				s.t.Fatalf("unknown field %q", line)
			}
		}
	}
}

// upTo reads events up to and including the first that matches pred.
func (s *streamReader) upTo(pred func(event) bool) []event {
	s.t.Helper()
	var out []event
	for {
		ev := s.next()
		out = append(out, ev)
		if pred(ev) {
			return out
		}
	}
}

func post(t *testing.T, srv *servertest.Server, path string, h map[string]string, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+srv.Addr+path, strings.NewReader(body))
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s answered %d with non-JSON %q", path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, out
}

// publish publishes through the server API and returns the offset.
func publish(t *testing.T, srv *servertest.Server, channel string, data any) uint64 {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"channel": channel, "data": data})
	status, out := post(t, srv, "/api/publish", map[string]string{"X-API-Key": servertest.APIKey}, string(b))
	if status != 200 {
		t.Fatalf("publish: %d %v", status, out)
	}
	return uint64(out["offset"].(float64))
}

// metric reads a counter from /metrics.
func metric(t *testing.T, srv *servertest.Server, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + srv.Addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func num(v any) uint64 { f, _ := v.(float64); return uint64(f) }

func TestStreamReceivesAndResumesEveryChannel(t *testing.T) {
	srv := servertest.Start(t, nil)
	tok := token(t, "alice", "42")
	a, b := "org:42:a", "org:42:b"
	s := stream(t, srv, tok, "", a, b)
	if ev := s.next(); ev.Name != "herald/connected" || ev.Data["userId"] != "alice" {
		t.Fatalf("first event %+v", ev)
	}
	for _, ch := range []string{a, b} {
		ev := s.next()
		if ev.Name != "herald/subscribed" || ev.Data["channel"] != ch || ev.Data["recovered"] != nil || ev.ID == "" {
			t.Fatalf("want subscribed %s with an id, got %+v", ch, ev)
		}
	}
	want := map[string][]uint64{}
	pub := func(ch string, i int) { want[ch] = append(want[ch], publish(t, srv, ch, map[string]int{"i": i})) }
	for i := range 4 {
		pub([]string{a, b}[i%2], i)
	}
	got := s.upTo(func(ev event) bool { return ev.Name == "message" && num(ev.Data["data"].(map[string]any)["i"]) == 3 })
	last := got[len(got)-1].ID
	s.resp.Body.Close()

	// Published while no stream is open: recovered on resume.
	for i := 4; i < 10; i++ {
		pub([]string{a, a, b}[i%3], i)
	}
	// The URL may list the channels in another order.
	r := stream(t, srv, tok, last, b, a)
	r.next() // connected
	rec := map[string]bool{}
	var after []event
	for len(rec) < 2 || len(after) < 6 {
		ev := r.next()
		switch ev.Name {
		case "herald/subscribed":
			rec[ev.Data["channel"].(string)] = ev.Data["recovered"] == true
		case "message":
			after = append(after, ev)
		}
	}
	if !rec[a] || !rec[b] {
		t.Fatalf("recovered %v, want both true", rec)
	}
	all := append(got, after...)
	for _, ch := range []string{a, b} {
		var offs []uint64
		for _, ev := range all {
			if ev.Name == "message" && ev.Data["channel"] == ch {
				offs = append(offs, num(ev.Data["offset"]))
			}
		}
		if len(offs) != len(want[ch]) {
			t.Fatalf("%s: got offsets %v, want %v", ch, offs, want[ch])
		}
		for i := range offs {
			if offs[i] != want[ch][i] {
				t.Fatalf("%s: got offsets %v, want %v", ch, offs, want[ch])
			}
		}
	}
	// The last event's id resumes to nothing more: recovered, no replay.
	r.resp.Body.Close()
	z := stream(t, srv, tok, after[len(after)-1].ID, a, b)
	z.next()
	for range 2 {
		if ev := z.next(); ev.Name != "herald/subscribed" || ev.Data["recovered"] != true {
			t.Fatalf("resume from the last id: %+v", ev)
		}
	}
	publish(t, srv, a, "live")
	if ev := z.next(); ev.Name != "message" || ev.Data["data"] != "live" {
		t.Fatalf("after a resume with nothing missed, want the live publication, got %+v", ev)
	}
}

func TestStreamResumeItCannotVouchFor(t *testing.T) {
	srv := servertest.Start(t, nil)
	tok := token(t, "bob", "42")
	publish(t, srv, "org:42", 1)
	for _, id := range []string{
		"not an id",               // not herald's: claims nothing
		"000000:1:000000000000",   // no entry for the channel
		strings.Repeat("a", 4000), // too long
	} {
		s := stream(t, srv, tok, id, "org:42")
		s.next()
		if ev := s.next(); ev.Name != "herald/subscribed" || ev.Data["recovered"] != false {
			t.Fatalf("Last-Event-ID %.20q: want recovered:false, got %+v", id, ev)
		}
		s.resp.Body.Close()
	}
}

func TestStreamRefusals(t *testing.T) {
	srv := servertest.Start(t, nil)
	tok := token(t, "carol", "42")
	many := make([]string, 33)
	for i := range many {
		many[i] = "c" + strconv.Itoa(i)
	}
	for _, tc := range []struct {
		name     string
		tok      string
		channels []string
		status   int
		code     string
	}{
		{"no channel", tok, nil, 400, "channel_required"},
		{"bad channel", tok, []string{"a b"}, 400, "invalid_channel"},
		{"too many", tok, many, 400, "too_many_subscriptions"},
		{"no token", "", []string{"news"}, 401, "unauthorized"},
		{"bad token", "x.y.z", []string{"news"}, 401, "unauthorized"},
		{"foreign org", tok, []string{"news", "org:7"}, 403, "forbidden"},
		{"other user", tok, []string{"user:dave"}, 403, "forbidden"},
	} {
		resp := open(t, srv, tc.tok, "", tc.channels...)
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != tc.status || body["error"] != tc.code {
			t.Errorf("%s: got %d %v, want %d %s", tc.name, resp.StatusCode, body, tc.status, tc.code)
		}
	}
}

func TestCommandEndpoint(t *testing.T) {
	srv := servertest.Start(t, nil)
	tok := token(t, "erin", "42")
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	reader := stream(t, srv, token(t, "frank", "42"), "", "org:42")
	reader.upTo(func(ev event) bool { return ev.Name == "herald/subscribed" })

	status, out := post(t, srv, "/sse/command", bearer, `{"type":"message","channel":"org:42","data":{"x":1},"id":"p1"}`)
	if status != 200 || out["type"] != "published" || out["id"] != "p1" {
		t.Fatalf("publish: %d %v", status, out)
	}
	if ev := reader.next(); ev.Data["from"] != "erin" || num(ev.Data["offset"]) != num(out["offset"]) {
		t.Fatalf("the stream got %+v", ev)
	}
	if status, out = post(t, srv, "/sse/command", bearer, `{"type":"message","channel":"org:42","data":2}`); status != 204 {
		t.Fatalf("publish without id: %d %v, want 204", status, out)
	}
	if status, out = post(t, srv, "/sse/command", bearer, `{"type":"history","channel":"org:42","limit":5,"id":7}`); status != 200 || out["type"] != "history" || len(out["publications"].([]any)) != 2 {
		t.Fatalf("history: %d %v", status, out)
	}
	if status, out = post(t, srv, "/sse/command", bearer, `{"type":"ping"}`); status != 200 || out["type"] != "pong" {
		t.Fatalf("ping: %d %v", status, out)
	}
	for _, tc := range []struct {
		name   string
		h      map[string]string
		path   string
		body   string
		status int
		code   string
	}{
		{"no credentials", nil, "/sse/command", `{"type":"ping"}`, 401, "unauthorized"},
		{"a cookie is no identity", map[string]string{"Cookie": "token=" + tok}, "/sse/command", `{"type":"ping"}`, 401, "unauthorized"},
		{"a query token is no identity", nil, "/sse/command?token=" + tok, `{"type":"ping"}`, 401, "unauthorized"},
		{"not JSON", bearer, "/sse/command", `{"type":`, 400, "bad_json"},
		{"unknown type", bearer, "/sse/command", `{"type":"dance"}`, 400, "unknown_type"},
		{"subscribe", bearer, "/sse/command", `{"type":"subscribe","channel":"news"}`, 400, "bad_request"},
		{"forbidden", bearer, "/sse/command", `{"type":"message","channel":"org:7","data":1,"id":1}`, 403, "forbidden"},
		{"too large", bearer, "/sse/command", `{"type":"message","channel":"news","data":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "too_large"},
	} {
		status, out := post(t, srv, tc.path, tc.h, tc.body)
		code := out["code"]
		if code == nil {
			code = out["error"]
		}
		if status != tc.status || code != tc.code {
			t.Errorf("%s: got %d %v, want %d %s", tc.name, status, out, tc.status, tc.code)
		}
	}
}

func TestCommandTiedToItsStreamIsNotEchoed(t *testing.T) {
	srv := servertest.Start(t, nil)
	tok := token(t, "gina", "42")
	s := stream(t, srv, tok, "", "org:42")
	hello := s.next()
	s.next() // subscribed
	h := map[string]string{"Authorization": "Bearer " + tok, "X-Herald-Client": hello.Data["clientId"].(string)}
	if status, out := post(t, srv, "/sse/command", h, `{"type":"message","channel":"org:42","data":"mine","id":1}`); status != 200 {
		t.Fatalf("publish: %d %v", status, out)
	}
	publish(t, srv, "org:42", "theirs")
	if ev := s.next(); ev.Data["data"] != "theirs" {
		t.Fatalf("the publisher's own stream got %+v first; want only the other publication", ev)
	}
	// Another user naming the stream gets no such favour: it is echoed.
	other := map[string]string{"Authorization": "Bearer " + token(t, "hank", "42"), "X-Herald-Client": hello.Data["clientId"].(string)}
	post(t, srv, "/sse/command", other, `{"type":"message","channel":"org:42","data":"hank's"}`)
	if ev := s.next(); ev.Data["data"] != "hank's" {
		t.Fatalf("got %+v, want hank's publication", ev)
	}
}

func TestStreamHeartbeatAndShutdown(t *testing.T) {
	srv := servertest.Start(t, func(c *config.Config) { c.PingInterval = 50 * time.Millisecond })
	s := stream(t, srv, token(t, "ivy", "42"), "", "news")
	s.next()
	s.next()
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv.Stop()
	}()
	var closed event
	for {
		ev, err := s.read()
		if err != nil {
			break
		}
		if ev.Name == "herald/close" {
			closed = ev
		}
	}
	if closed.Name == "" || num(closed.Data["code"]) != 1001 {
		t.Fatalf("stream ended without herald/close 1001: %+v", closed)
	}
	if s.Comments == 0 {
		t.Fatal("no heartbeat comment on an idle stream")
	}
}

func TestStreamReaderThatStopsIsCutOff(t *testing.T) {
	srv := servertest.Start(t, func(c *config.Config) {
		c.MaxMessageBytes = 16 << 10
		c.ClientQueueBytes = 64 << 10
	})
	nc, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The socket keeps its default receive buffer: a tiny one (4 KiB) makes
	// the kernel hold back the window update when the reader starts again,
	// so the server's last bytes come only with its zero-window probes,
	// seconds to minutes apart: the end of the stream then waits on TCP's
	// backoff, not on herald.
	_, _ = nc.Write([]byte("GET /sse?channel=org:42 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token(t, "jack", "42") + "\r\n\r\n"))
	pad := strings.Repeat("x", 15<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmds := make([]map[string]any, 50)
	for i := range cmds {
		cmds[i] = map[string]any{"method": "publish", "channel": "org:42", "data": pad}
	}
	body, _ := json.Marshal(map[string]any{"commands": cmds})
	for srv.Hub().NumClients() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the stream never opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for srv.Hub().NumClients() > 0 {
		if ctx.Err() != nil {
			t.Fatal("the reader that reads nothing was never cut off")
		}
		if status, out := post(t, srv, "/api/batch", map[string]string{"X-API-Key": servertest.APIKey}, string(body)); status != 200 {
			t.Fatalf("batch: %d %v", status, out)
		}
	}
	if n := metric(t, srv, "herald_slow_consumer_closes_total"); n < 1 {
		t.Fatalf("the stream ended, but not as a slow consumer (herald_slow_consumer_closes_total %v)", n)
	}
	// The stream ends for the reader that reads now.
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("the stream did not end: %v", err)
	}
}

func TestStreamLosingPublicationsIsClosedAndRecovers(t *testing.T) {
	srv := servertest.Start(t, nil)
	tok := token(t, "kate", "42")
	s := stream(t, srv, tok, "", "org:42", "news")
	s.upTo(func(ev event) bool { return ev.Name == "herald/subscribed" && ev.Data["channel"] == "news" })
	publish(t, srv, "org:42", 1)
	last := s.next().ID
	// What the Redis broker does when publications were lost between
	// nodes: the channel's local subscribers are closed with 4010.
	srv.Hub().CloseChannel("org:42", protocol.CloseResubscribe, "publications lost between nodes")
	closed := s.upTo(func(ev event) bool { return ev.Name == "herald/close" })
	if ev := closed[len(closed)-1]; num(ev.Data["code"]) != protocol.CloseResubscribe {
		t.Fatalf("close event %+v, want code 4010", ev)
	}
	if _, err := s.read(); err == nil {
		t.Fatal("the stream went on after its close event")
	}
	publish(t, srv, "org:42", 2)
	r := stream(t, srv, tok, last, "org:42", "news")
	evs := r.upTo(func(ev event) bool { return ev.Name == "message" })
	for _, ev := range evs {
		if ev.Name == "herald/subscribed" && ev.Data["recovered"] != true {
			t.Fatalf("resume after 4010: %+v", ev)
		}
	}
	if m := evs[len(evs)-1]; m.Data["data"] != float64(2) {
		t.Fatalf("recovered %+v, want the publication made after the close", m)
	}
}

func TestStreamOriginsAndPreflight(t *testing.T) {
	srv := servertest.Start(t, func(c *config.Config) { c.AllowedOrigins = []string{"https://app.example"} })
	tok := token(t, "liam", "42")
	get := func(origin string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+srv.Addr+"/sse?channel=news&token="+tok, nil)
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if resp := get("https://app.example"); resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("allowed origin: %d, ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	if resp := get("https://evil.example"); resp.StatusCode != 403 {
		t.Fatalf("foreign origin: %d, want 403", resp.StatusCode)
	}
	for _, tc := range []struct {
		origin string
		status int
	}{{"https://app.example", 204}, {"https://evil.example", 403}} {
		req, _ := http.NewRequest("OPTIONS", "http://"+srv.Addr+"/sse/command", nil)
		req.Header.Set("Origin", tc.origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.status == 204 && !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")) {
			t.Fatalf("preflight from %s: %d %v", tc.origin, resp.StatusCode, resp.Header)
		}
	}
}

func TestStreamLimitsAndDevelopmentIdentity(t *testing.T) {
	srv := servertest.Start(t, func(c *config.Config) {
		c.InsecureQueryAuth = true
		c.MaxUserConnections = 1
		c.RateLimit, c.RateBurst = 1, 1
	})
	resp, err := http.Get("http://" + srv.Addr + "/sse?channel=news&userId=mia&role=member")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("query identity: %v %v", resp, err)
	}
	defer resp.Body.Close()
	second, err := http.Get("http://" + srv.Addr + "/sse?channel=news&userId=mia")
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if second.StatusCode != 429 {
		t.Fatalf("a second stream past --max-user-connections: %d, want 429", second.StatusCode)
	}
	// Commands without a stream on this node: rate-limited per user.
	h := map[string]string{"Authorization": "Bearer " + token(t, "noah", "")}
	if status, out := post(t, srv, "/sse/command", h, `{"type":"ping"}`); status != 200 {
		t.Fatalf("first ping: %d %v", status, out)
	}
	if status, out := post(t, srv, "/sse/command", h, `{"type":"ping"}`); status != 429 || out["code"] != "rate_limited" {
		t.Fatalf("second ping within the limit's second: %d %v, want 429 rate_limited", status, out)
	}
}

func TestStreamPastMaxConnections(t *testing.T) {
	srv := servertest.Start(t, func(c *config.Config) { c.MaxConnections = 1 })
	s := stream(t, srv, token(t, "pia", "42"), "", "news")
	s.next()
	resp := open(t, srv, token(t, "quinn", "42"), "", "news")
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 503 || body["error"] != "server_full" {
		t.Fatalf("a stream past --max-connections: %d %v, want 503 server_full", resp.StatusCode, body)
	}
}

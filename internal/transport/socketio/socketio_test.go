package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport/socketio/engine"
)

// fakeHerald is a one-node stand-in for herald's sessions: channels with
// offsets and history, subscribe (with since and events), unsubscribe,
// message and history, and "org:X" readable only by tokens of org X.
type fakeHerald struct {
	mu   sync.Mutex
	logs map[string][]protocol.Message
	subs map[string]map[*fakeRunner][]string
}

type fakeRunner struct {
	h   *fakeHerald
	c   *Conn
	org string
}

func (r *fakeRunner) Close() {
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	for _, m := range r.h.subs {
		delete(m, r)
	}
}

func (r *fakeRunner) Run(b []byte) {
	var cmd protocol.Command
	if err := json.Unmarshal(b, &cmd); err != nil {
		panic(err)
	}
	h := r.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if strings.HasPrefix(cmd.Channel, "org:") && cmd.Channel != "org:"+r.org {
		r.c.WriteNative(protocol.AppendError(nil, protocol.CodeForbidden, "forbidden", cmd.Channel, cmd.ID))
		return
	}
	log := h.logs[cmd.Channel]
	pos := protocol.Position{Offset: uint64(len(log)), Epoch: "e1"}
	switch cmd.Type {
	case "subscribe":
		if h.subs[cmd.Channel] == nil {
			h.subs[cmd.Channel] = map[*fakeRunner][]string{}
		}
		h.subs[cmd.Channel][r] = cmd.Events
		var rec *bool
		var replay []protocol.Message
		if cmd.Since != nil {
			ok := cmd.Since.Epoch == "e1" && *cmd.Since.Offset <= pos.Offset
			rec = &ok
			if ok {
				replay = log[*cmd.Since.Offset:]
			}
		}
		r.c.WriteNative(protocol.AppendSubscribed(nil, cmd.Channel, pos, rec, cmd.ID))
		for i := range replay {
			r.c.WriteNative(protocol.AppendMessage(nil, &replay[i]))
		}
	case "unsubscribe":
		delete(h.subs[cmd.Channel], r)
		r.c.WriteNative(protocol.AppendAck(nil, "unsubscribed", cmd.Channel, cmd.ID))
	case "message":
		m := protocol.Message{Channel: cmd.Channel, Data: cmd.Data, Event: cmd.Event, Offset: pos.Offset + 1, Time: time.Now()}
		h.logs[cmd.Channel] = append(log, m)
		r.c.WriteNative(protocol.AppendPublished(nil, cmd.Channel, protocol.Position{Offset: m.Offset, Epoch: "e1"}, false, cmd.ID))
		shared := AppendDelivery(nil, &m)
		for s, evs := range h.subs[cmd.Channel] {
			if len(evs) == 0 || strings.Contains(strings.Join(evs, ","), m.Event) {
				s.c.Deliver(shared, &m)
			}
		}
	case "history":
		r.c.WriteNative(protocol.AppendHistory(nil, cmd.Channel, pos, log, false, cmd.ID))
	}
}

type sioFixture struct {
	t    *testing.T
	h    *fakeHerald
	srv  *Server
	url  string
	mu   sync.Mutex
	errs map[string]int
}

func newSIO(t *testing.T, conformance bool) *sioFixture {
	f := &sioFixture{t: t, h: &fakeHerald{logs: map[string][]protocol.Message{}, subs: map[string]map[*fakeRunner][]string{}}, errs: map[string]int{}}
	onErr := func(kind string, err error) {
		f.mu.Lock()
		f.errs[kind]++
		f.mu.Unlock()
	}
	f.srv = NewServer(engine.Options{PingInterval: 5 * time.Second, PingTimeout: 5 * time.Second, MaxPayload: 1 << 16, OnError: onErr}, Options{
		Recovery:    true,
		Conformance: conformance,
		OnError:     onErr,
		Connect: func(c *Conn, cred Credentials) (Runner, error) {
			org, ok := strings.CutPrefix(cred.Token, "org-")
			if !ok {
				return nil, &Refusal{Code: "unauthorized", Message: "unauthorized: token missing"}
			}
			return &fakeRunner{h: f.h, c: c, org: org}, nil
		},
	})
	hs := httptest.NewServer(f.srv)
	t.Cleanup(func() { f.srv.Close(); hs.Close() })
	f.url = strings.Replace(hs.URL, "http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
	return f
}

func (f *sioFixture) errCount(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errs[k]
}

type client struct {
	t *testing.T
	c net.Conn
	r io.Reader
}

func (f *sioFixture) dial() *client {
	nc, br, _, err := ws.Dial(context.Background(), f.url)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { nc.Close() })
	cl := &client{t: f.t, c: nc, r: nc}
	if br != nil {
		cl.r = io.MultiReader(br, nc)
	}
	if open := cl.read(); !strings.HasPrefix(open, "0{") {
		f.t.Fatalf("open %q", open)
	}
	return cl
}

func (cl *client) send(s string) { _ = wsutil.WriteClientText(cl.c, []byte(s)) }

// read returns the next text message that is not a ping.
func (cl *client) read() string {
	cl.t.Helper()
	for {
		_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _, err := wsutil.ReadServerData(struct {
			io.Reader
			io.Writer
		}{cl.r, cl.c})
		if err != nil {
			cl.t.Fatalf("read: %v", err)
		}
		if string(b) != "2" {
			return string(b)
		}
	}
}

// readUntil reads until a message starting with prefix, returning it.
func (cl *client) readUntil(prefix string) string {
	cl.t.Helper()
	for {
		if m := cl.read(); strings.HasPrefix(m, prefix) {
			return m
		}
	}
}

func (cl *client) closed() bool {
	_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := wsutil.ReadServerData(struct {
			io.Reader
			io.Writer
		}{cl.r, cl.c})
		if err != nil {
			var ce wsutil.ClosedError
			return errors.As(err, &ce) || errors.Is(err, io.EOF)
		}
	}
}

func (cl *client) connect(auth string) (sid, pid string) {
	cl.send("40" + auth)
	ans := cl.read()
	var a struct{ SID, PID string }
	if !strings.HasPrefix(ans, "40{") || json.Unmarshal([]byte(ans[2:]), &a) != nil || a.SID == "" {
		cl.t.Fatalf("connect answer %q", ans)
	}
	return a.SID, a.PID
}

// event decodes an EVENT message into its name and arguments.
func event(t *testing.T, m string) (string, []json.RawMessage) {
	t.Helper()
	var all []json.RawMessage
	if !strings.HasPrefix(m, "42") || json.Unmarshal([]byte(m[2:]), &all) != nil {
		t.Fatalf("not an event: %q", m)
	}
	var name string
	_ = json.Unmarshal(all[0], &name)
	return name, all[1:]
}

func TestConnectRefusedAndNamespaces(t *testing.T) {
	f := newSIO(t, false)
	cl := f.dial()
	cl.send("40")
	if got := cl.read(); got != `44{"message":"unauthorized: token missing","data":{"code":"unauthorized"}}` {
		t.Fatalf("refusal %q", got)
	}
	cl.send("40/admin,")
	if got := cl.read(); got != `44/admin,{"message":"Invalid namespace"}` {
		t.Fatalf("namespace %q", got)
	}
	if f.errCount(KindRefused) != 1 || f.errCount(KindBadNamespace) != 1 {
		t.Errorf("errors %v", f.errs)
	}
}

func TestJoinPublishFilterHistory(t *testing.T) {
	f := newSIO(t, false)
	a, b, other := f.dial(), f.dial(), f.dial()
	a.connect(`{"token":"org-42"}`)
	b.connect(`{"token":"org-42"}`)
	other.connect(`{"token":"org-7"}`)
	a.send(`421["join:analytics","42"]`)
	if got := a.read(); !strings.HasPrefix(got, `431[{"ok":true,"channel":"org:42","offset":0,"epoch":"e1"}]`) {
		t.Fatalf("join ack %q", got)
	}
	other.send(`425["join:analytics",42]`)
	if got := other.read(); !strings.HasPrefix(got, `435[{"ok":false,"error":{"code":"forbidden"`) {
		t.Fatalf("other org's join %q", got)
	}
	b.send(`427["publish",{"channel":"org:42","event":"message","data":{"n":1}}]`)
	if got := b.read(); got != `437[{"ok":true,"channel":"org:42","offset":1,"epoch":"e1"}]` {
		t.Fatalf("publish ack %q", got)
	}
	name, args := event(t, a.readUntil(`42["message"`))
	var u struct {
		Type, Channel string
		Data          struct{ N int }
		Offset        int
	}
	if name != "message" || len(args) != 2 || json.Unmarshal(args[0], &u) != nil || u.Type != "message" || u.Channel != "org:42" || u.Data.N != 1 || u.Offset != 1 {
		t.Fatalf("delivery %s %s", name, args)
	}
	// Event filter: only sentiment.
	a.send(`422["subscribe:events",["sentiment"]]`)
	a.readUntil(`432[{"ok":true,"events":["sentiment"]`)
	b.send(`42["publish",{"channel":"org:42","event":"metrics","data":2}]`)
	b.send(`42["publish",{"channel":"org:42","event":"sentiment","data":3}]`)
	name, args = event(t, a.readUntil(`42["`))
	if name != "sentiment" || !strings.Contains(string(args[0]), `"data":3`) {
		t.Fatalf("filtered delivery %s %s", name, args)
	}
	// History of every room.
	a.send(`423["request:history",{"since":{"offset":0,"epoch":"e1"}}]`)
	h := a.readUntil("433")
	if !strings.Contains(h, `"publications":[{"channel":"org:42","data":{"n":1}`) || strings.Count(h, `"channel":"org:42"`) != 3 {
		t.Fatalf("history %q", h)
	}
	// Unknown event and binary attachments: refused through the ack.
	a.send(`424["nope"]`)
	if got := a.readUntil("434"); !strings.Contains(got, `"code":"unknown_event"`) {
		t.Fatalf("unknown event %q", got)
	}
	a.send(`451-9["publish",{"_placeholder":true,"num":0}]`)
	_ = wsutil.WriteClientBinary(a.c, []byte{1})
	if got := a.readUntil("439"); !strings.Contains(got, `"code":"binary_unsupported"`) {
		t.Fatalf("binary %q", got)
	}
}

func TestRecovery(t *testing.T) {
	f := newSIO(t, false)
	a, pub := f.dial(), f.dial()
	_, pid := a.connect(`{"token":"org-42"}`)
	pub.connect(`{"token":"org-42"}`)
	a.send(`421["join:analytics","42"]`)
	a.readUntil("431")
	_, rooms := event(t, a.readUntil(`42["herald:rooms"`))
	last := rooms[len(rooms)-1]
	pub.send(`42["publish",{"channel":"org:42","data":1}]`)
	_, args := event(t, a.readUntil(`42["message"`))
	last = args[len(args)-1]
	a.c.Close()
	for i := 2; i <= 4; i++ {
		pub.send(`42["publish",{"channel":"org:42","data":` + string(rune('0'+i)) + `}]`)
	}
	pub.send(`429["publish",{"channel":"org:42","data":9}]`)
	pub.readUntil("439")
	b := f.dial()
	sid2, pid2 := b.connect(`{"token":"org-42","pid":"` + pid + `","offset":` + string(last) + `}`)
	if pid2 != pid || sid2 == "" {
		t.Fatalf("not recovered: pid %q, want %q", pid2, pid)
	}
	for _, want := range []string{"2", "3", "4", "9"} {
		_, args := event(t, b.readUntil(`42["message"`))
		if !strings.Contains(string(args[0]), `"data":`+want+`,`) {
			t.Fatalf("replay: %s, want data %s", args[0], want)
		}
	}
	// A forged offset recovers nothing: a new pid.
	c := f.dial()
	if _, pid3 := c.connect(`{"token":"org-42","pid":"` + pid + `","offset":"!!"}`); pid3 == pid {
		t.Fatal("garbage offset recovered")
	}
	// Another org's room in an offset is refused: not recovered.
	d := f.dial()
	forged := string(appendRecovery(nil, roomSet{list: []room{{ch: "org:7", pos: &position{epoch: "e1"}}}}))
	if _, pid4 := d.connect(`{"token":"org-42","pid":"` + pid + `","offset":"` + forged + `"}`); pid4 == pid {
		t.Fatal("other org's room recovered")
	}
}

func TestBadPackets(t *testing.T) {
	f := newSIO(t, false)
	for i, bad := range []string{"4abc", "42{}", `42abc["publish"]`, `431[]`, "49", `45["x"]`} {
		cl := f.dial()
		cl.connect(`{"token":"org-1"}`)
		cl.send(bad)
		if !cl.closed() {
			t.Fatalf("%d %q: not closed", i, bad)
		}
	}
	if f.errCount(KindBadPacket) < 5 || f.errCount(KindBadAck) != 1 {
		t.Errorf("errors %v", f.errs)
	}
	waitFor(t, func() bool { return f.srv.NumSessions() == 0 })
}

func TestConformanceMode(t *testing.T) {
	f := newSIO(t, true)
	cl := f.dial()
	cl.send(`40/custom,{"token":"abc"}`)
	if got := cl.read(); !strings.HasPrefix(got, `40/custom,{"sid":`) {
		t.Fatalf("custom connect %q", got)
	}
	if got := cl.read(); got != `42/custom,["auth",{"token":"abc"}]` {
		t.Fatalf("auth %q", got)
	}
	cl.send("40")
	cl.read()
	if got := cl.read(); got != `42["auth",{}]` {
		t.Fatalf("auth %q", got)
	}
	cl.send(`42456["message-with-ack",1,"2",{"3":[false]}]`)
	if got := cl.read(); got != `43456[1,"2",{"3":[false]}]` {
		t.Fatalf("ack %q", got)
	}
	cl.send(`452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
	_ = wsutil.WriteClientBinary(cl.c, []byte{1, 2, 3})
	_ = wsutil.WriteClientBinary(cl.c, []byte{4, 5, 6})
	if got := cl.read(); got != `452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]` {
		t.Fatalf("binary echo %q", got)
	}
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

package bench

import (
	"strings"
	"testing"
	"time"
)

func TestSIOPacket(t *testing.T) {
	doc, ping := sioPacket([]byte("2"))
	if !ping || doc != nil {
		t.Fatalf("ping: %q %v", doc, ping)
	}
	d := `42["message",{"type":"message","channel":"c","data":{"seq":3,"t":9},"offset":3,"timestamp":"x"},"b2ZmCg"]`
	doc, ping = sioPacket([]byte(d))
	if ping || !strings.HasPrefix(string(doc), `{"type":"message","channel":"c"`) {
		t.Fatalf("delivery: %q %v", doc, ping)
	}
	if seq, ts, ok := scanSeqT(doc); !ok || seq != 3 || ts != 9 {
		t.Fatalf("scanSeqT: %d %d %v", seq, ts, ok)
	}
	for _, p := range []string{`42["herald:rooms",{"rooms":["c"]},"x"]`, `431[{"ok":true}]`, `40{"sid":"a"}`, "3"} {
		if doc, ping := sioPacket([]byte(p)); doc != nil || ping {
			t.Errorf("%s: %q %v", p, doc, ping)
		}
	}
}

func TestSIOSetupSteps(t *testing.T) {
	var s sioSetup
	chans := []string{"group:0", "user:bench-0"}
	send, done, err := s.step([]byte(`0{"sid":"x","upgrades":[]}`), chans)
	if err != nil || done || len(send) != 1 || string(send[0]) != "40" {
		t.Fatalf("open: %q %v %v", send, done, err)
	}
	send, done, err = s.step([]byte(`40{"sid":"y","pid":"p"}`), chans)
	if err != nil || done || len(send) != 2 || string(send[0]) != `421["subscribe","group:0"]` || string(send[1]) != `422["subscribe","user:bench-0"]` {
		t.Fatalf("connect: %q %v %v", send, done, err)
	}
	if _, done, err = s.step([]byte(`42["herald:rooms",{"rooms":[]}]`), chans); done || err != nil {
		t.Fatalf("rooms event: %v %v", done, err)
	}
	if _, done, err = s.step([]byte(`431[{"ok":true,"channel":"group:0"}]`), chans); done || err != nil {
		t.Fatalf("first ack: %v %v", done, err)
	}
	if _, done, err = s.step([]byte(`432[{"ok":true,"channel":"user:bench-0"}]`), chans); !done || err != nil {
		t.Fatalf("last ack: %v %v", done, err)
	}
	var r sioSetup
	r.step([]byte(`0{}`), chans)
	if _, _, err := r.step([]byte(`44{"message":"unauthorized"}`), chans); err == nil {
		t.Fatal("refused CONNECT not an error")
	}
	var f sioSetup
	f.step([]byte(`0{}`), chans)
	f.step([]byte(`40{}`), chans)
	if _, _, err := f.step([]byte(`431[{"ok":false,"error":{"code":"forbidden"}}]`), chans); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("refused subscribe: %v", err)
	}
}

// TestSocketIOProtocol: Socket.IO subscribers on both readers, in the
// fanout scenario (one channel) and channels (a group and a user channel
// each, two subscribe events), with the server pinging every 100 ms and
// dropping a connection silent for 2 s: every delivery arrives, none is
// dropped (the Engine.IO pings are answered).
func TestSocketIOProtocol(t *testing.T) {
	for _, reader := range readers() {
		t.Run(reader, func(t *testing.T) {
			url := startPingingServer(t)
			cfg := testConfig(url, "fanout")
			cfg.Reader, cfg.Protocol, cfg.Duration, cfg.Rate = reader, "socketio", 3*time.Second, 20
			r := run(t, cfg)
			checkDeliveries(t, r, 50)
			if r.Protocol != "socketio" {
				t.Fatalf("protocol %q", r.Protocol)
			}
			cfg = testConfig(url, "channels")
			cfg.Reader, cfg.Protocol, cfg.Rate = reader, "socketio", 50
			checkDeliveries(t, run(t, cfg), 10)
		})
	}
}

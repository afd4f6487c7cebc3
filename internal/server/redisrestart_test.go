package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/redistest"
)

// A planned restart of a durable Redis (appendonly yes, appendfsync always,
// SHUTDOWN SAVE), end to end: the node closes its subscriber with 4010, and
// the subscriber, reconnecting with since, recovers what was published
// while it was away with recovered:true in the same epoch, then live
// publications follow. A Redis that comes back without its files answers
// the same recovery with recovered:false in a new epoch.
func TestRedisRestartRecovery(t *testing.T) {
	for _, lose := range []bool{false, true} {
		t.Run(map[bool]string{false: "durable", true: "files lost"}[lose], func(t *testing.T) {
			rs, err := redistest.StartDurable()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(rs.Stop)
			a := startNode(t, rs, "r")
			c := a.dial("alice", "42")
			ack := c.subscribeSince("org:42", map[string]any{"offset": 0, "epoch": "none"}, nil)
			epoch, _ := ack["epoch"].(string)
			a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":1}`)
			last := num(c.expect("message")["offset"])
			var prepare func(string) error
			if lose {
				prepare = func(dir string) error { return os.RemoveAll(filepath.Join(dir, "appendonlydir")) }
			}
			if err := rs.Restart(prepare); err != nil {
				t.Fatal(err)
			}
			if code := c.expectClose(10 * time.Second); code != 4010 {
				t.Fatalf("close code %d after the restart, want 4010", code)
			}
			eventually(t, 10*time.Second, "node live again", func() bool {
				st, _ := a.api("GET", "/healthz", "", "")
				return st == 200
			})
			for i := 2; i <= 3; i++ {
				if st, body := a.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"org:42","data":%d}`, i)); st != 200 {
					t.Fatalf("publish %d: %d %v", i, st, body)
				}
			}
			c = a.dial("alice", "42")
			ack = c.subscribeSince("org:42", map[string]any{"offset": last, "epoch": epoch}, nil)
			if lose {
				if ack["recovered"] != false || ack["epoch"] == epoch {
					t.Fatalf("recovery after Redis lost its files: %v, want recovered:false in a new epoch", ack)
				}
				return
			}
			if ack["recovered"] != true || ack["epoch"] != epoch || num(ack["offset"]) != 3 {
				t.Fatalf("recovery after a durable restart: %v, want recovered:true at offset 3 of %s", ack, epoch)
			}
			for i := 2; i <= 3; i++ {
				if m := c.expect("message"); m["data"] != float64(i) || num(m["offset"]) != uint64(i) {
					t.Fatalf("replay %d: %v", i, m)
				}
			}
			a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:42","data":"live"}`)
			if m := c.expect("message"); m["data"] != "live" || num(m["offset"]) != 4 {
				t.Fatalf("live: %v", m)
			}
		})
	}
}

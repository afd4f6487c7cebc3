package redisbroker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/redistest"
)

// Tests of what a node trusts after Redis restarts or loses data: history
// that provably survived keeps its epochs (subscribers recover with
// recovered:true and lose nothing); history that may have been rolled back
// gets new epochs (recovered:false, never an offset handed out twice).

var restartHistory = broker.HistoryOptions{Size: 100}

// durableRedis runs a Redis of the test's own with an append-only file
// fsynced on every write.
func durableRedis(t *testing.T) *redistest.Server {
	t.Helper()
	rs, err := redistest.StartDurable()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Stop)
	return rs
}

// collector records what a node delivers to its local subscribers.
type collector struct {
	mu  sync.Mutex
	got []broker.Publication
}

func (c *collector) deliver(_ string, p *broker.Publication) int {
	c.mu.Lock()
	c.got = append(c.got, *p)
	c.mu.Unlock()
	return 1
}

// last is the offset of the newest delivery (0 if none).
func (c *collector) last() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.got) == 0 {
		return 0
	}
	return c.got[len(c.got)-1].Offset
}

// publishEventually publishes data, retrying while the node is not live
// again after a restart (ErrUnavailable), for at most 10s.
func publishEventually(t *testing.T, b *Broker, channel, data string) broker.PublishResult {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var res broker.PublishResult
		if res, err = b.Publish(context.Background(), channel, broker.Publication{Data: []byte(data)}, broker.PublishOptions{History: restartHistory}); err == nil {
			return res
		}
	}
	t.Fatalf("publish %s: %v", data, err)
	return broker.PublishResult{}
}

// recoverEventually subscribes from since, retrying while the node is not
// live, and returns the recovery.
func recoverEventually(t *testing.T, b *Broker, channel string, since broker.Position) broker.Recovery {
	t.Helper()
	var rec broker.Recovery
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		err = b.Subscribe(context.Background(), channel, broker.SubscribeOptions{Since: &broker.Since{Offset: since.Offset, Epoch: since.Epoch}, History: restartHistory},
			func(r broker.Recovery) error { rec = r; return nil })
		if err == nil {
			return rec
		}
	}
	t.Fatalf("subscribe %s: %v", channel, err)
	return rec
}

// waitDelivered waits until c has delivered the publication at pos, and
// returns pos: where a subscriber of that node stands.
func waitDelivered(t *testing.T, c *collector, pos broker.PublishResult) broker.Position {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.last() < pos.Offset; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("offset %d not delivered within 5s (newest %d)", pos.Offset, c.last())
		}
	}
	return pos.Position
}

// subscribedNode starts a node on rs with a subscriber on "doc", and
// what it delivers.
func subscribedNode(t *testing.T, rs *redistest.Server, prefix string) (*Broker, *collector) {
	t.Helper()
	var seen collector
	b := start(t, Options{Redis: rs.Options(), Prefix: prefix, Deliver: seen.deliver})
	joinNow(t, b, "doc")
	return b, &seen
}

// copyFiles copies rs's append-only files now, for restoreFiles.
func copyFiles(t *testing.T, rs *redistest.Server) string {
	t.Helper()
	older := filepath.Join(t.TempDir(), "appendonlydir")
	if err := exec.Command("cp", "-a", filepath.Join(rs.Dir(), "appendonlydir"), older).Run(); err != nil {
		t.Fatal(err)
	}
	return older
}

// restoreFiles puts the files copyFiles copied in place of a Redis's own,
// as Restart's prepare.
func restoreFiles(older string) func(dir string) error {
	return func(dir string) error {
		if err := os.RemoveAll(filepath.Join(dir, "appendonlydir")); err != nil {
			return err
		}
		return exec.Command("cp", "-a", older, filepath.Join(dir, "appendonlydir")).Run()
	}
}

// datas lists the publications' data and checks their offsets run from
// first on without a gap.
func datas(t *testing.T, ps []broker.Publication, first uint64) []string {
	t.Helper()
	var out []string
	for i, p := range ps {
		if p.Offset != first+uint64(i) {
			t.Fatalf("publication %d has offset %d, want %d", i, p.Offset, first+uint64(i))
		}
		out = append(out, string(p.Data))
	}
	return out
}

// A planned restart of a durable Redis (appendonly yes, appendfsync always,
// SHUTDOWN SAVE) loses nothing, and the nodes see that: the epochs stay, so
// a subscriber that saw offset 3 recovers what was published while it was
// away, with recovered:true and the same epoch, and live publications go
// on from there.
func TestDurableRedisRestartKeepsHistory(t *testing.T) {
	rs := durableRedis(t)
	a, seen := subscribedNode(t, rs, "d")
	b := start(t, Options{Redis: rs.Options(), Prefix: "d"})
	publishEventually(t, b, "doc", "1")
	publishEventually(t, b, "doc", "2")
	was := waitDelivered(t, seen, publishEventually(t, b, "doc", "3")) // what the subscriber on a saw before the restart
	if err := rs.Restart(nil); err != nil {
		t.Fatal(err)
	}
	publishEventually(t, b, "doc", "4")
	publishEventually(t, b, "doc", "5")
	rec := recoverEventually(t, a, "doc", was)
	if !rec.Recovered || rec.Position.Epoch != was.Epoch || rec.Position.Offset != 5 {
		t.Fatalf("recovery from %+v after a durable restart: recovered %v at %+v, want recovered:true at offset 5 of the same epoch", was, rec.Recovered, rec.Position)
	}
	if got := datas(t, rec.Publications, 4); len(got) != 2 || got[0] != "4" || got[1] != "5" {
		t.Fatalf("recovered %v, want [4 5]", got)
	}
	if res := publishEventually(t, b, "doc", "6"); res.Epoch != was.Epoch || res.Offset != 6 {
		t.Fatalf("publish after recovery at %+v, want offset 6 of %s", res.Position, was.Epoch)
	}
}

// A durable Redis restarted from older files (a backup, a copy of another
// moment) has lost offsets a subscriber saw. The node that delivered them
// finds its channel's offset went backwards, and the instance gets a new
// id: recovery answers recovered:false (the subscriber starts again from
// the current position) rather than recovered:true over offsets handed out
// a second time.
func TestRedisRestartFromOlderFilesIsANewEpoch(t *testing.T) {
	rs := durableRedis(t)
	a, seen := subscribedNode(t, rs, "o")
	publishEventually(t, a, "doc", "1")
	publishEventually(t, a, "doc", "2")
	older := copyFiles(t, rs) // every write is on disk before it is answered: this holds 1 and 2
	was := waitDelivered(t, seen, publishEventually(t, a, "doc", "3"))
	err := rs.Restart(restoreFiles(older))
	if err != nil {
		t.Fatal(err)
	}
	res := publishEventually(t, a, "doc", "3'") // offset 3 again, in Redis's own stored epoch
	if res.Epoch == was.Epoch {
		t.Fatalf("publish after the rollback reports epoch %s, the one the subscriber holds", res.Epoch)
	}
	rec := recoverEventually(t, a, "doc", was)
	if rec.Recovered || len(rec.Publications) != 0 || rec.Position != res.Position {
		t.Fatalf("recovery from %+v after a rollback: recovered %v with %d publications at %+v, want recovered:false at %+v", was, rec.Recovered, len(rec.Publications), rec.Position, res.Position)
	}
}

// A Redis that lost everything (restarted without its files, or flushed
// while running) has no instance key: the node makes a new one, every
// epoch changes, and recovery answers recovered:false.
func TestFlushedRedisIsANewEpoch(t *testing.T) {
	for _, how := range []string{"restart without files", "flushall"} {
		t.Run(how, func(t *testing.T) {
			rs := durableRedis(t)
			a, seen := subscribedNode(t, rs, "f")
			publishEventually(t, a, "doc", "1")
			was := waitDelivered(t, seen, publishEventually(t, a, "doc", "2"))
			if how == "flushall" {
				c := rs.Client()
				defer c.Close()
				if err := c.FlushAll(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
			} else if err := rs.Restart(func(dir string) error { return os.RemoveAll(filepath.Join(dir, "appendonlydir")) }); err != nil {
				t.Fatal(err)
			}
			res := publishEventually(t, a, "doc", "1'")
			if res.Epoch == was.Epoch || res.Offset != 1 {
				t.Fatalf("publish after the loss at %+v, want offset 1 of a new epoch", res.Position)
			}
			rec := recoverEventually(t, a, "doc", was)
			if rec.Recovered || len(rec.Publications) != 0 || rec.Position != res.Position {
				t.Fatalf("recovery from %+v after the loss: recovered %v with %d publications at %+v", was, rec.Recovered, len(rec.Publications), rec.Position)
			}
		})
	}
}

// A node that knew nothing of a channel may verify a rolled-back durable
// Redis first and trust it; the node that delivered the lost offsets finds
// the rollback when it verifies, gives the instance a new id, and the first
// node's next script is refused, so it verifies again and takes the new id
// too: both nodes end on the same epochs, not the ones the subscriber held.
// (Had the first node published on the same channel meanwhile, past the
// lost offsets, no node could tell; see docs/architecture.md, the Redis broker.)
func TestRollbackFoundByAnotherNodeReachesAll(t *testing.T) {
	rs := durableRedis(t)
	a, seen := subscribedNode(t, rs, "n")
	publishEventually(t, a, "doc", "1")
	older := copyFiles(t, rs)
	was := waitDelivered(t, seen, publishEventually(t, a, "doc", "2"))
	// The knowing node cannot verify (renew waits for subMu) while Redis
	// restarts and a new node verifies first.
	a.subMu.Lock()
	err := rs.Restart(restoreFiles(older))
	if err != nil {
		a.subMu.Unlock()
		t.Fatal(err)
	}
	b := start(t, Options{Redis: rs.Options(), Prefix: "n"})
	old := instanceID(a.salt.Load())
	trusted := instanceID(b.salt.Load())
	a.subMu.Unlock()
	if trusted != old {
		t.Fatalf("the new node gave the durable Redis a new instance id (%s, was %s): it knew no offset to find the rollback by", trusted, old)
	}
	after := publishEventually(t, a, "doc", "2'")
	if after.Epoch == was.Epoch || instanceID(a.salt.Load()) == old {
		t.Fatalf("the node that delivered offset 2 trusts a Redis that lost it (epoch %s)", after.Epoch)
	}
	publishEventually(t, b, "other", "x")
	if got, want := instanceID(b.salt.Load()), instanceID(a.salt.Load()); got != want {
		t.Fatalf("the other node's instance id is %s after a script refused, want %s", got, want)
	}
	if res := publishEventually(t, b, "doc", "3'"); res.Epoch != after.Epoch || res.Offset != 3 {
		t.Fatalf("the other node publishes at %+v, want offset 3 of %s", res.Position, after.Epoch)
	}
}

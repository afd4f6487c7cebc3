package redisbroker

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/broker"
)

// persistentRedis runs a real redis-server that keeps its data in dir
// (an RDB file, as Redis does by default), so that it can be restarted as a
// crashed Redis is: with the state of its last snapshot. (redistest runs
// Redis without persistence and cannot restart one.)
func persistentRedis(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("redis-server", "--port", "0", "--unixsocket", filepath.Join(dir, "redis.sock"),
		"--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: filepath.Join(dir, "redis.sock")})
	defer c.Close()
	for deadline := time.Now().Add(5 * time.Second); c.Ping(context.Background()).Err() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not start")
		}
	}
	return cmd
}

// When Redis comes back with older data than it had (a restart from its
// last RDB snapshot or an AOF fsynced every second, a failover to a replica
// that had not caught up), the channel's stored epoch is the old one and
// lost offsets are handed out again. The epochs the broker reports carry the
// Redis instance's run id, which a restarted Redis does not share: a
// subscriber that saw the old offsets 3..5 recovers with recovered:false,
// not recovered:true over the new 3..5.
func TestRedisRollbackIsANewEpoch(t *testing.T) {
	dir := t.TempDir()
	rs := persistentRedis(t, dir)
	defer func() { _ = rs.Process.Kill(); _ = rs.Wait() }()
	cOpts := &redis.Options{Network: "unix", Addr: filepath.Join(dir, "redis.sock")}
	b := start(t, Options{Redis: cOpts, Prefix: "rb"})
	c := redis.NewClient(cOpts)
	defer c.Close()
	ctx := context.Background()
	ho := broker.PublishOptions{History: broker.HistoryOptions{Size: 100}}
	pub := func(data string) broker.PublishResult {
		t.Helper()
		var res broker.PublishResult
		var err error
		for deadline := time.Now().Add(4 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if res, err = b.Publish(context.Background(), "r", broker.Publication{Data: []byte(data)}, ho); err == nil {
				return res
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
		}
	}
	pub("1")
	pub("2")
	if err := c.Save(ctx).Err(); err != nil { // the last snapshot before the crash
		t.Fatal(err)
	}
	pub("3")
	pub("4")
	seen := pub("5") // a subscriber has seen up to here when Redis crashes
	_ = rs.Process.Kill()
	_ = rs.Wait()
	rs = persistentRedis(t, dir)
	pub("3'")
	pub("4'")
	pub("5'")
	pub("6'")
	var rec broker.Recovery
	err := b.Subscribe(context.Background(), "r", broker.SubscribeOptions{Since: &broker.Since{Offset: seen.Offset, Epoch: seen.Epoch}, History: ho.History},
		func(r broker.Recovery) error { rec = r; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if rec.Recovered {
		var got []string
		for _, p := range rec.Publications {
			got = append(got, string(p.Data))
		}
		t.Fatalf("recovery from %+v after Redis lost offsets 3..5: recovered:true with %v; the subscriber never gets 3' 4' 5'", seen.Position, got)
	}
}

package hub

import (
	"sync/atomic"
	"testing"
	"time"
)

// lastWords is a Transport whose close is "X".
type lastWords struct{}

func (lastWords) Ping() []byte                     { return nil }
func (lastWords) Close(int, string) ([]byte, bool) { return []byte("X"), false }

// TestRebind: a Rebind waits for the write under way, and everything
// queued until then goes to the old connection, in order, before drained
// runs; what is queued from the switch on, and the close, go to the new
// one.
func TestRebind(t *testing.T) {
	h := newTestHub(1 << 20)
	old := &gateConn{started: make(chan struct{}), release: make(chan struct{})}
	c := h.NewClient(old, ClientOptions{ID: "c1", UserID: "u"})
	if err := h.Register(c); err != nil {
		t.Fatal(err)
	}
	c.Send([]byte("a"))
	<-old.started // the writer is in the old connection's Write
	opened := make(chan struct{})
	close(opened)
	nc := &gateConn{started: make(chan struct{}), release: opened}
	var flipped atomic.Bool
	oldAtDrain := make(chan string, 1)
	done := make(chan bool, 1)
	go func() {
		done <- c.Rebind(nc, lastWords{}, false, func() { flipped.Store(true) }, func() error {
			oldAtDrain <- string(old.written())
			c.Send([]byte("c")) // after the switch
			return nil
		})
	}()
	for !c.waitingRebind() { // the Rebind has begun, and waits for the writer role
		time.Sleep(time.Millisecond)
	}
	c.Send([]byte("b")) // before the switch: the write of "a" holds it off
	if flipped.Load() {
		t.Fatal("switched while a write to the old connection was under way")
	}
	close(old.release)
	if got := <-oldAtDrain; got != "ab" {
		t.Fatalf("the old connection got %q before drained, want \"ab\"", got)
	}
	if !<-done {
		t.Fatal("Rebind of an open client failed")
	}
	c.Send([]byte("d"))
	c.Close(1000, "")
	waitWritten(t, nc, "cdX")
	if got := string(old.written()); got != "ab" {
		t.Fatalf("the old connection got %q after the switch, want \"ab\"", got)
	}
	if c.Rebind(nc, lastWords{}, false, func() { t.Error("flip of a closed client") }, nil) {
		t.Fatal("Rebind of a closing client succeeded")
	}
}

// waitingRebind reports whether a Rebind waits for the writer role.
func (c *Client) waitingRebind() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rebind != nil
}

func waitWritten(t *testing.T, c *gateConn, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); string(c.written()) != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("wrote %q, want %q", c.written(), want)
		}
	}
}

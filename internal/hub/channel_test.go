package hub

import (
	"fmt"
	"slices"
	"testing"
)

// checkMembers fails unless ch holds exactly want, in that order, with an
// index that agrees.
func checkMembers(t *testing.T, ch *channel, want []*Client) {
	t.Helper()
	got := make([]*Client, len(ch.members))
	for i, m := range ch.members {
		got[i] = m.c
		if j, ok := ch.index[m.c]; !ok || j != i {
			t.Fatalf("member %d (%s): index says %d, %v", i, m.c.ID, j, ok)
		}
	}
	if len(ch.index) != len(ch.members) || !slices.Equal(got, want) {
		t.Fatalf("members %v (index %d), want %v", ids(got), len(ch.index), ids(want))
	}
}

func ids(cs []*Client) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

// subscribed registers n clients ("0", "1", …) and subscribes them to "ch"
// in that order, client i with the event filter events(i) (all events when
// events is nil).
func subscribed(t *testing.T, h *Hub, n int, events func(i int) []string) []*Client {
	t.Helper()
	cs := make([]*Client, n)
	for i := range cs {
		cs[i] = h.NewClient(&countConn{}, ClientOptions{ID: fmt.Sprint(i), UserID: "u"})
		var ev []string
		if events != nil {
			ev = events(i)
		}
		if _, err := h.Subscribe(cs[i], "ch", ev); err != nil {
			t.Fatal(err)
		}
	}
	return cs
}

// TestChannelMembers: members keep subscription order; one leaving is
// replaced by the last; a resubscribe changes the filter in place; the
// channel goes when its last member does.
func TestChannelMembers(t *testing.T) {
	h := newTestHub(1 << 20)
	cs := subscribed(t, h, 5, nil)
	ch := func() *channel { return h.channels[h.shard("ch")].channels["ch"] }
	checkMembers(t, ch(), cs)
	if already, err := h.Subscribe(cs[2], "ch", []string{"e"}); err != nil || !already {
		t.Fatalf("resubscribe: %v %v", already, err)
	}
	checkMembers(t, ch(), cs)
	if m := ch().members[2]; !slices.Equal(m.events, []string{"e"}) {
		t.Fatalf("filter %v after resubscribe", m.events)
	}
	h.Unsubscribe(cs[1], "ch") // the last takes its place
	checkMembers(t, ch(), []*Client{cs[0], cs[4], cs[2], cs[3]})
	h.Unsubscribe(cs[3], "ch") // the last itself
	checkMembers(t, ch(), []*Client{cs[0], cs[4], cs[2]})
	if h.Unsubscribe(cs[3], "ch") {
		t.Fatal("unsubscribed twice")
	}
	for _, c := range []*Client{cs[0], cs[4], cs[2]} {
		h.Unsubscribe(c, "ch")
	}
	if ch() != nil || h.numChannels.Load() != 0 || h.numSubs.Load() != 0 {
		t.Fatalf("channel left behind: %v, %d channels, %d subscriptions", ch(), h.numChannels.Load(), h.numSubs.Load())
	}
}

// TestPublishQueuesInRotatedOrder: a publication is queued to the
// subscribers in subscription order from some member on, wrapping around,
// each once (skipping exclude and filtered ones), and the first one varies
// from publication to publication.
func TestPublishQueuesInRotatedOrder(t *testing.T) {
	h := newTestHub(1 << 20)
	p := h.writers
	p.running = true // no workers: what Publish queues stays on the FIFO
	cs := subscribed(t, h, 8, func(i int) []string {
		if i == 5 {
			return []string{"other"}
		}
		return nil
	})
	want := slices.Clone(cs)
	want = slices.Delete(want, 5, 6) // filtered out
	want = slices.Delete(want, 3, 4) // excluded
	firsts := map[*Client]bool{}
	for range 200 {
		if got := h.Publish("ch", NewFrame(append(NewFrameBuffer(1), 'x')), cs[3], "e"); got != len(want) {
			t.Fatalf("queued to %d, want %d", got, len(want))
		}
		q := p.tryPopAll()
		k := slices.Index(want, q[0])
		if k < 0 || !slices.Equal(q, append(slices.Clone(want[k:]), want[:k]...)) {
			t.Fatalf("queued %v, want a rotation of %v", ids(q), ids(want))
		}
		firsts[q[0]] = true
		for _, c := range q { // hand the writer role back
			c.mu.Lock()
			c.takeLocked()
			c.writing = false
			c.mu.Unlock()
		}
	}
	if len(firsts) < 3 {
		t.Fatalf("200 publications started at only %v", firsts)
	}
}

// tryPopAll takes everything queued on the FIFO.
func (p *writerPool) tryPopAll() []*Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := slices.Clone(p.q[p.head:])
	p.q, p.head = p.q[:0], 0
	return q
}

// TestChannelShrinks: when a crowd leaves, the member slice and the index
// are rebuilt to fit what stays, in the same order; a small channel is left
// alone.
func TestChannelShrinks(t *testing.T) {
	h := newTestHub(1 << 20)
	cs := subscribed(t, h, 1000, nil)
	ch := h.channels[h.shard("ch")].channels["ch"]
	peak := cap(ch.members)
	// The last 990 leave, newest first: the first ten stay in place.
	for i := len(cs) - 1; i >= 10; i-- {
		h.Unsubscribe(cs[i], "ch")
	}
	checkMembers(t, ch, cs[:10])
	if c := cap(ch.members); c > max(shrinkFrom, 4*10) {
		t.Fatalf("capacity %d for 10 members after a peak of %d", c, peak)
	}
	// Below shrinkFrom nothing is copied: the slice stays the same array.
	before := &ch.members[:1][0]
	for i := 9; i >= 1; i-- {
		h.Unsubscribe(cs[i], "ch")
	}
	checkMembers(t, ch, cs[:1])
	if cap(ch.members) >= shrinkFrom || &ch.members[:1][0] != before {
		t.Fatalf("a channel under %d was copied (capacity %d)", shrinkFrom, cap(ch.members))
	}
}

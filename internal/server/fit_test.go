package server

import (
	"strings"
	"testing"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/hub"
)

// TestFitHistory: the newest that fit without since, the oldest with it,
// and truncated exactly when something was left out.
func TestFitHistory(t *testing.T) {
	pubs := make([]broker.Publication, 10)
	for i := range pubs {
		pubs[i] = broker.Publication{Offset: uint64(i + 1), Data: make([]byte, 904)} // 1,000 bytes each
	}
	for _, c := range []struct {
		budget      int
		newest      bool
		first, last uint64
		n           int
		truncated   bool
	}{
		{10_000, true, 1, 10, 10, false},
		{10_000, false, 1, 10, 10, false},
		{3_500, true, 8, 10, 3, true},
		{3_500, false, 1, 3, 3, true},
		{999, true, 0, 0, 0, true},
		{-5, false, 0, 0, 0, true},
	} {
		got, truncated := fitHistory(pubs, c.budget, c.newest)
		if len(got) != c.n || truncated != c.truncated || (c.n > 0 && (got[0].Offset != c.first || got[len(got)-1].Offset != c.last)) {
			t.Errorf("budget %d newest %v: %d publications, truncated %v; want %d (%d..%d), %v", c.budget, c.newest, len(got), truncated, c.n, c.first, c.last, c.truncated)
		}
	}
	if got, truncated := fitHistory(nil, 0, true); len(got) != 0 || truncated {
		t.Errorf("nothing to fit: %d, %v", len(got), truncated)
	}
}

// TestFitPresence: entries are kept in order while they fit, counting the
// ids at their escaped worst, and truncated says when some were left out.
func TestFitPresence(t *testing.T) {
	clients := make([]hub.PresenceInfo, 5)
	for i := range clients {
		clients[i] = hub.PresenceInfo{ClientID: strings.Repeat("c", 16), UserID: strings.Repeat("u", 44)} // 200 bytes each
	}
	for budget, want := range map[int]int{1000: 5, 999: 4, 200: 1, 199: 0, 0: 0} {
		got, truncated := fitPresence(clients, budget)
		if len(got) != want || truncated != (want < 5) {
			t.Errorf("budget %d: %d entries, truncated %v; want %d", budget, len(got), truncated, want)
		}
	}
}

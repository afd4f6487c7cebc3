package bench

import (
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestResubscribePosition: after a reconnect with since, the position
// recovery resumes from next time follows the subscribed reply's epoch.
// Deliveries carry no epoch, so one kept from before an epoch change would
// make every later reconnect resume from a position in a lost history. In
// the same epoch the stored offset stays: the reply's is the channel's
// newest, and the replay that follows it moves the stored one.
func TestResubscribePosition(t *testing.T) {
	for _, tc := range []struct {
		reply     string
		offset    uint64
		epoch     string
		recovered uint64
	}{
		{`{"type":"subscribed","channel":"bench","offset":7,"epoch":"new","recovered":false}`, 7, "new", 0},
		{`{"type":"subscribed","channel":"bench","offset":45,"epoch":"old","recovered":true}`, 41, "old", 1},
	} {
		tg, _ := fakeUpgrader(t, func(_ *http.Request, accept string) string {
			return switching(accept, "") +
				string(serverFrame(ws.OpText, []byte(`{"type":"connected","client":"c1","user":"bench-0"}`))) +
				string(serverFrame(ws.OpText, []byte(tc.reply)))
		})
		c, err := dialTest(t, tg, false)
		if err != nil {
			t.Fatal(err)
		}
		f := &localFleet{spec: fleetSpec{Scenario: "recovery", Channel: "bench", DropEvery: time.Second}}
		bc := &bconn{ws: c, offset: 41, epoch: "old", hasOff: true}
		if err := f.setup(bc, time.Now().Add(5*time.Second), bc); err != nil {
			t.Fatal(err)
		}
		if bc.offset != tc.offset || bc.epoch != tc.epoch || f.rec.Recovered != tc.recovered {
			t.Errorf("after %s: offset %d epoch %q recovered %d, want %d %q %d", tc.reply, bc.offset, bc.epoch, f.rec.Recovered, tc.offset, tc.epoch, tc.recovered)
		}
	}
}

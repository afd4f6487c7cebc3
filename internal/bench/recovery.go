package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-rt/herald/internal/auth"
)

// The recovery scenario: while publications flow, connections are dropped
// (closed by the client, abruptly) and reconnect after DropDown, resubscribing
// with "since":{"offset","epoch"} taken from the last delivery they saw. The
// ordinary loss accounting then shows whether the server filled the gap.

// dropping starts or stops runDropper.
func (f *localFleet) dropping(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case on && f.stopDrops == nil:
		var ctx context.Context
		ctx, f.stopDrops = context.WithCancel(context.Background())
		go f.runDropper(ctx)
	case !on && f.stopDrops != nil:
		f.stopDrops()
		f.stopDrops = nil
	}
}

// runDropper closes a random tenth of the fleet's connections every
// DropEvery until ctx is done.
func (f *localFleet) runDropper(ctx context.Context) {
	if f.spec.DropEvery <= 0 {
		return
	}
	t := time.NewTicker(f.spec.DropEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		n := len(f.conns)/10 + 1
		for range n {
			if len(f.conns) == 0 {
				break
			}
			bc := f.conns[rand.IntN(len(f.conns))]
			if !bc.down {
				bc.down = true
				_ = bc.ws.nc.Close()
			}
		}
		f.mu.Unlock()
	}
}

// reconnect replaces bc's socket after a drop. It returns false when the
// fleet is stopping or the reconnect failed.
func (f *localFleet) reconnect(bc *bconn) bool {
	_ = bc.ws.nc.Close()
	if f.stopping.Load() {
		return false
	}
	time.Sleep(f.spec.DropDown)
	if f.stopping.Load() {
		return false
	}
	i := bc.idx - f.spec.First
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), f.spec.ConnectTimeout)
	defer cancel()
	c, err := dialWS(ctx, f.target, f.tokens[i], f.localFor(bc.idx), f.spec.ReadBuffer, f.spec.ConnectTimeout, uint64(start.UnixNano()), f.spec.Compress)
	if err != nil {
		f.mu.Lock()
		f.rec.ReconnectFail++
		f.mu.Unlock()
		return false
	}
	f.mu.Lock()
	if f.stopping.Load() {
		f.mu.Unlock()
		c.close(ws.StatusNormalClosure)
		return false
	}
	bc.ws = c
	f.rec.Reconnects++
	if bc.hasOff {
		f.rec.OffsetsSeen++
	}
	f.mu.Unlock()
	var since *bconn
	if bc.hasOff {
		since = bc
	}
	if err := f.setup(bc, start.Add(f.spec.ConnectTimeout), since); err != nil {
		f.mu.Lock()
		f.rec.ReconnectFail++
		f.mu.Unlock()
		return false
	}
	f.mu.Lock()
	bc.down = false
	f.mu.Unlock()
	return true
}

// awaitSubscribed reads c until the subscribed reply.
func awaitSubscribed(c *wsConn) error {
	for {
		op, p, err := c.readFrame()
		if err != nil {
			return fmt.Errorf("waiting for subscribed: %w", err)
		}
		if op == ws.OpText && string(frameType(p)) == "subscribed" {
			return nil
		}
		if op == ws.OpText && string(frameType(p)) == "error" {
			return fmt.Errorf("subscribe refused: %s", p)
		}
	}
}

// publishOnce publishes one payload of cfg's kind to ch, as the run's
// publisher would.
func publishOnce(ctx context.Context, cfg Config, t target, ch string) error {
	pc := cfg
	pc.Publishers = 1
	sinks, _, err := makeSinks(ctx, pc, t)
	if err != nil {
		return err
	}
	data := appendPayloadKind(nil, 0, time.Now().UnixNano(), cfg.Payload, cfg.Compressible)
	err = sinks[0].publish(ctx, 0, ch, data)
	sinks[0].close()
	return err
}

// probeOffsets checks whether the server carries per-channel offsets: one
// connection subscribes to a fresh channel, one publication goes out, and
// the delivery is inspected for "offset". It reports ok=false with an
// explanation when the server does not send offsets.
func probeOffsets(ctx context.Context, cfg Config, t target) (bool, string, error) {
	tok, err := auth.Mint([]byte(cfg.JWTSecret), auth.Identity{UserID: "bench-probe"}, cfg.TokenTTL)
	if err != nil {
		return false, "", err
	}
	c, err := dialWS(ctx, t, tok, nil, cfg.ReadBuffer, cfg.ConnectTimeout, uint64(time.Now().UnixNano()), cfg.Compress)
	if err != nil {
		return false, "", err
	}
	defer c.close(ws.StatusNormalClosure)
	_ = c.nc.SetDeadline(time.Now().Add(cfg.ConnectTimeout))
	ch := fmt.Sprintf("%s:probe-%d", cfg.Channel, time.Now().UnixNano())
	if err := c.writeText([]byte(`{"type":"subscribe","channel":"` + ch + `"}`)); err != nil {
		return false, "", err
	}
	if err := awaitSubscribed(c); err != nil {
		return false, "", err
	}
	if err := publishOnce(ctx, cfg, t, ch); err != nil {
		return false, "", err
	}
	for {
		op, p, err := c.readFrame()
		if err != nil {
			return false, "", fmt.Errorf("waiting for the probe publication: %w", err)
		}
		if op != ws.OpText || string(frameType(p)) != "message" {
			continue
		}
		if _, ok := uintField(p, "offset"); !ok {
			return false, "recovery NOT MEASURED: the server's deliveries carry no \"offset\" (per-channel offsets and subscribe \"since\" are not implemented by this server yet); no loss/recovery numbers are reported", nil
		}
		return true, "the server sends offsets; a dropped subscriber resubscribes with since {offset, epoch} (it needs history on --channel's namespace, e.g. history_size, to recover)", nil
	}
}

package server

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/sparselog"
)

// TestCloseFloodsAreLoggedSparingly: every close a client causes (invalid
// UTF-8, a protocol violation, an oversize message, a rate limit passed)
// used to write one log line per connection, so a client reconnecting in a
// loop could fill a disk. Each reason is one line per interval, with the
// count since its last line: with the log's clock standing still, a flood
// of N closes for one reason is one line, the other N-1 are counted, and
// the next line, an interval later, carries them. Every connection still
// gets its close code.
func TestCloseFloodsAreLoggedSparingly(t *testing.T) {
	checkGoroutines(t)
	s, logs, clock := sparseServer(t, func(cfg *config.Config) {
		cfg.MaxMessageBytes = 1024
		cfg.RateLimit, cfg.RateBurst, cfg.RateLimitStrikes = 1, 1, 2
	})
	cfg := s.cfg
	addr := serve(t, s)
	tok, err := auth.Mint([]byte(cfg.JWTSecret), auth.Identity{UserID: "flooder"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	target := "ws://" + addr + "/ws?token=" + url.QueryEscape(tok)

	const n = 500
	for _, c := range []struct {
		reason string // the line's message
		frames [][]byte
		code   ws.StatusCode
		conns  int
	}{
		{"invalid UTF-8 in text frame, closing", [][]byte{clientFrame(ws.OpText, []byte{'"', 0xff, 0xfe, '"'}, true)}, 1007, n},
		{"protocol violation, closing", [][]byte{clientFrame(ws.OpText, []byte(`{"type":"ping"}`), false)}, 1002, 100},
		{"message too large, closing", [][]byte{clientFrame(ws.OpBinary, make([]byte, 2048), true)}, 1009, 100},
		{"rate limit exceeded repeatedly, closing", [][]byte{
			clientFrame(ws.OpText, []byte(`{"type":"ping"}`), true),
			clientFrame(ws.OpText, []byte(`{"type":"ping"}`), true),
			clientFrame(ws.OpText, []byte(`{"type":"ping"}`), true),
			clientFrame(ws.OpText, []byte(`{"type":"ping"}`), true),
		}, 4029, 100},
	} {
		t.Run(c.reason, func(t *testing.T) {
			floodCloses(t, target, c.frames, c.code, c.conns)
			line := `msg="` + c.reason + `"`
			if got := strings.Count(logs.String(), line); got != 1 {
				t.Fatalf("%d lines for %d closes, want 1:\n%.3000s", got, c.conns, logs.String())
			}
			if !strings.Contains(logs.String(), "count=1\n") {
				t.Fatalf("the first line does not say count=1")
			}
			if got := s.sparse.Pending(c.reason); got != int64(c.conns-1) {
				t.Fatalf("%d closes waiting for the next line, want %d", got, c.conns-1)
			}
			clock.Advance(sparselog.Interval)
			floodCloses(t, target, c.frames, c.code, 1)
			want := fmt.Sprintf("count=%d\n", c.conns)
			if got := strings.Count(logs.String(), line); got != 2 {
				t.Fatalf("%d lines after an interval, want 2", got)
			}
			last := logs.String()[strings.LastIndex(logs.String(), line):]
			if !strings.HasSuffix(strings.SplitAfter(last, "\n")[0], want) {
				t.Fatalf("the line an interval later does not carry the %d closes since the first: %s", c.conns, last)
			}
			if got := s.sparse.Pending(c.reason); got != 0 {
				t.Fatalf("%d closes still pending after the second line", got)
			}
		})
	}
}

// floodCloses opens conns connections to target, 16 at a time; each sends
// frames and must be closed with code.
func floodCloses(t *testing.T, target string, frames [][]byte, code ws.StatusCode, conns int) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- closedWith(target, frames, code)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// closedWith connects to target, reads the greeting, sends frames and
// reads until the server's close frame, which must carry code.
func closedWith(target string, frames [][]byte, code ws.StatusCode) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, br, _, err := ws.Dialer{}.Dial(ctx, target)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	var r io.Reader = nc
	if br != nil {
		r = io.MultiReader(br, nc)
	}
	if _, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{r, nc}); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	for _, f := range frames {
		if _, err := nc.Write(f); err != nil {
			return err
		}
	}
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return fmt.Errorf("before the close frame: %w", err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			return err
		}
		if h.OpCode == ws.OpClose {
			got, _ := ws.ParseCloseFrameData(p)
			if got != code {
				return fmt.Errorf("closed with %d, want %d", got, code)
			}
			return nil
		}
	}
}

// clientFrame is one final frame of op with payload, masked when masked.
func clientFrame(op ws.OpCode, payload []byte, masked bool) []byte {
	f := ws.NewFrame(op, true, append([]byte(nil), payload...))
	if masked {
		f = ws.MaskFrameInPlace(f)
	}
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

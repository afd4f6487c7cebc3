package bench

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallingProxy forwards TCP connections to addr; once stall is called it
// stops reading from the clients (as a server that has stopped reading its
// sockets), until release.
type stallingProxy struct {
	ln      net.Listener
	stalled atomic.Bool
	release chan struct{}
	once    sync.Once
}

func newStallingProxy(t *testing.T, addr string) *stallingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, release: make(chan struct{})}
	t.Cleanup(func() { p.unstall(); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(c, up); c.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					if p.stalled.Load() {
						<-p.release
					}
					n, err := c.Read(buf)
					if n > 0 {
						if _, werr := up.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				up.Close()
			}()
		}
	}()
	return p
}

func (p *stallingProxy) stall()   { p.stalled.Store(true) }
func (p *stallingProxy) unstall() { p.once.Do(func() { close(p.release) }) }

// TestWSPublisherStalledServer: a server that stops reading its socket (here
// a proxy in front of a real herald stalls) must not block the ws publisher
// forever: its writes end on an interrupt (ctx cancelled: "Ctrl-C prints a
// partial report") and, without one, at the --duration + --grace cutoff
// ("publishing stops at --duration + --grace even if behind").
func TestWSPublisherStalledServer(t *testing.T) {
	for _, interrupt := range []bool{true, false} {
		t.Run(map[bool]string{true: "interrupted", false: "cutoff"}[interrupt], func(t *testing.T) {
			srvURL := startServer(t, nil)
			addr := strings.TrimSuffix(strings.TrimPrefix(srvURL, "ws://"), "/ws")
			p := newStallingProxy(t, addr)
			cfg := testConfig("ws://"+p.ln.Addr().String()+"/ws", "fanout")
			cfg.PublishVia, cfg.APIKey = "ws", ""
			cfg.ServerPID = 0
			cfg.Conns = 1
			cfg.Rate = 20
			cfg.Payload = 512 << 10
			cfg.Duration = 2 * time.Second
			cfg.Grace = time.Second
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			time.AfterFunc(500*time.Millisecond, p.stall)
			if interrupt {
				time.AfterFunc(2500*time.Millisecond, cancel) // Ctrl-C
			}
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				var out strings.Builder
				_, err := Run(ctx, cfg, &out, stderrOnFailure(t))
				t.Logf("report:\n%s", out.String())
				done <- err
			}()
			select {
			case err := <-done:
				t.Logf("Run returned after %v: %v", time.Since(start), err)
			case <-time.After(10 * time.Second):
				p.unstall() // let the blocked write finish so the run can end
				<-done
				t.Fatalf("Run still running 10 s after start (--duration 2s, --grace 1s, interrupt %v): the ws publisher is blocked in a write to a server that stopped reading", interrupt)
			}
		})
	}
}

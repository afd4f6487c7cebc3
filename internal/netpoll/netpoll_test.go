package netpoll

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/testnet"
)

// running starts a poller; it is stopped when the test ends, and Run must
// then return without an error.
func running(t testing.TB) *Poller {
	t.Helper()
	p, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		p.Close()
	})
	return p
}

func TestReadinessOneShotAndResume(t *testing.T) {
	p := running(t)
	server, client := testnet.TCPPair(t)

	got := make(chan string, 10)
	var calls atomic.Int32
	_, err := p.Add(server, func(d *Desc) {
		calls.Add(1)
		buf := make([]byte, 16)
		n, err := server.Read(buf)
		if err != nil {
			got <- "err:" + err.Error()
			d.Remove()
			return
		}
		got <- string(buf[:n])
		_ = d.Resume()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"one", "two", "three"} {
		if _, err := client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-got:
			if s != msg {
				t.Fatalf("got %q, want %q", s, msg)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no readiness for %q", msg)
		}
	}
	// Idle: the handler does not run without data. (The portable poller
	// runs it again at once, and it waits in its read.)
	time.Sleep(50 * time.Millisecond)
	want := int32(3)
	if !readinessDriven {
		want = 4
	}
	if n := calls.Load(); n != want {
		t.Fatalf("handler ran %d times, want %d", n, want)
	}
	// EOF is a readiness too.
	client.Close()
	select {
	case s := <-got:
		if s != "err:"+io.EOF.Error() {
			t.Fatalf("got %q, want EOF", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no readiness on EOF")
	}
}

// TestNoLostReadiness keeps many connections busy with short exchanges —
// the first byte there before Add, each next one written before the
// handler's Resume — and checks that every byte is seen: a readiness lost
// anywhere (Add, Resume, the wait for the epoll descriptor) leaves one
// stalled.
func TestNoLostReadiness(t *testing.T) {
	p := running(t)
	const conns, rounds = 64, 300
	var wg sync.WaitGroup
	for range conns {
		server, client := testnet.TCPPair(t)
		if _, err := client.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		seen := make(chan struct{}, 1)
		_, err := p.Add(server, func(d *Desc) {
			buf := make([]byte, 64)
			if _, err := server.Read(buf); err != nil {
				d.Remove()
				return
			}
			seen <- struct{}{} // the next byte may come before Resume
			_ = d.Resume()
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				select {
				case <-seen:
				case <-time.After(5 * time.Second):
					t.Errorf("byte %d of %d never seen by the handler", i+1, rounds)
					return
				}
				if _, err := client.Write([]byte{1}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestRunEnds: cancelling Run's context, or closing the poller, wakes its
// wait at once and Run returns without an error.
func TestRunEnds(t *testing.T) {
	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			p, err := New(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			time.Sleep(20 * time.Millisecond) // parked
			if how == "cancel" {
				cancel()
			} else {
				p.Close()
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(time.Second):
				t.Fatal("Run did not return")
			}
		})
	}
}

func TestAddAfterClose(t *testing.T) {
	p, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	_, client := testnet.TCPPair(t)
	if _, err := p.Add(client, func(*Desc) {}); err != ErrClosed {
		t.Fatalf("Add after Close: %v", err)
	}
}

// BenchmarkResume: re-arming a registration, which a session does after
// every command it reads, is one epoll_ctl and allocates nothing.
func BenchmarkResume(b *testing.B) {
	p := running(b)
	server, _ := testnet.TCPPair(b)
	d, err := p.Add(server, func(*Desc) {})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Resume(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWatchStoppedBeforeOrAfterStart checks Watch's contract: a watch
// stopped before Start removes the registration Start makes (the handler
// never runs), and after Stop, Resume re-arms nothing.
func TestWatchStoppedBeforeOrAfterStart(t *testing.T) {
	p := running(t)
	server, client := testnet.TCPPair(t)
	var early Watch
	early.Stop()
	ran := make(chan struct{}, 4)
	if err := early.Start(p, server, func(*Desc) { ran <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if readinessDriven {
		select {
		case <-ran:
			t.Fatal("the handler of a watch stopped before Start ran")
		case <-time.After(50 * time.Millisecond):
		}
	}

	server2, client2 := testnet.TCPPair(t)
	var w Watch
	got := make(chan *Desc, 4)
	if err := w.Start(p, server2, func(d *Desc) {
		buf := make([]byte, 8)
		_, _ = server2.Read(buf)
		got <- d
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := client2.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	var d *Desc
	select {
	case d = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no readiness")
	}
	w.Stop()
	w.Stop() // idempotent
	if err := w.Resume(d); err != nil {
		t.Fatalf("Resume after Stop: %v", err)
	}
	if _, err := client2.Write([]byte("z")); err != nil {
		t.Fatal(err)
	}
	if readinessDriven {
		select {
		case <-got:
			t.Fatal("the handler ran again after Stop")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

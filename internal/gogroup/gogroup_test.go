package gogroup

import (
	"context"
	"testing"
	"time"
)

func TestWaitReturnsWhenAllExited(t *testing.T) {
	var g Group
	release := make(chan struct{})
	for range 10 {
		g.Go(func() { <-release })
	}
	if n := g.Running(); n != 10 {
		t.Fatalf("Running = %d, want 10", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Wait(ctx); err == nil {
		t.Fatal("Wait returned nil while goroutines still ran")
	}
	close(release)
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := g.Running(); n != 0 {
		t.Fatalf("Running = %d after Wait, want 0", n)
	}
}

func TestAfterFuncCountedUntilRunOrStopped(t *testing.T) {
	var g Group
	stopped := g.AfterFunc(time.Hour, func() { t.Error("stopped call ran") })
	ran := make(chan struct{})
	g.AfterFunc(time.Millisecond, func() { close(ran) })
	if n := g.Running(); n != 2 {
		t.Fatalf("Running = %d, want 2", n)
	}
	if !stopped.Stop() {
		t.Fatal("Stop of a pending call reported false")
	}
	if stopped.Stop() {
		t.Fatal("second Stop reported true")
	}
	<-ran
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	var nilTimer *Timer
	if nilTimer.Stop() {
		t.Fatal("nil Timer Stop reported true")
	}
}

func TestGoWhileWaiting(t *testing.T) {
	var g Group
	first := make(chan struct{})
	g.Go(func() {
		// Starts another before it exits: Wait must not return between.
		g.Go(func() { <-first })
	})
	waited := make(chan error, 1)
	go func() { waited <- g.Wait(context.Background()) }()
	select {
	case <-waited:
		t.Fatal("Wait returned while a goroutine was blocked")
	case <-time.After(20 * time.Millisecond):
	}
	close(first)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
}

func TestEnterLeave(t *testing.T) {
	var g Group
	g.Enter()
	release := make(chan struct{})
	go func() {
		defer g.Leave()
		<-release
	}()
	if n := g.Running(); n != 1 {
		t.Fatalf("Running = %d, want 1", n)
	}
	close(release)
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

package stack

import (
	"sync"
	"testing"
)

// deep recurses n frames of about 300 bytes each, like a call chain that
// needs 12 KiB of stack.
//
//go:noinline
func deep(n int) byte {
	var pad [256]byte
	pad[n%256] = byte(n)
	if n == 0 {
		return pad[0]
	}
	return deep(n-1) + pad[n%256]
}

// BenchmarkDeepGoroutine is a goroutine that runs a 12 KiB-deep chain:
// started as it is (the stack doubles three times, deeper each time) and
// with Grow first (one step while shallow). go test -bench DeepGoroutine
// -count 10 | benchstat.
func BenchmarkDeepGoroutine(b *testing.B) {
	for _, c := range []struct {
		name string
		grow bool
	}{{"fresh", false}, {"grown", true}} {
		b.Run(c.name, func(b *testing.B) {
			var wg sync.WaitGroup
			for b.Loop() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if c.grow {
						Grow()
					}
					deep(40)
				}()
				wg.Wait()
			}
		})
	}
}

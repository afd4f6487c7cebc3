// Package stack grows a goroutine's stack ahead of a deep call chain.
//
// A goroutine starts on a small stack and the runtime doubles it whenever a
// call does not fit, copying the stack and adjusting every frame on it: the
// deeper the chain when it happens, the more that costs. Calling Grow first,
// while the stack holds only a frame or two, gets the same stack in one
// cheap step (what that saves in a connect storm: docs/performance.md).
package stack

// frame is the stack frame Grow asks for: with what its caller already
// uses, the runtime takes a 2 KiB stack to 16 KiB in one step.
const frame = 10 << 10

// Grow makes the calling goroutine's stack at least 16 KiB. Call it first
// thing in a goroutine that is about to run a deep call chain. On a stack
// that is already large enough it costs clearing frame bytes.
//
//go:noinline
func Grow() {
	var f [frame]byte
	sink(f[:])
}

//go:noinline
func sink([]byte) {}

package bench

import (
	"math"
	"syscall"
	"time"
)

// selfCPU returns the CPU time (user+system) this process has used.
func selfCPU() time.Duration {
	var creation, exit, kernel, user syscall.Filetime
	h, err := syscall.GetCurrentProcess()
	if err != nil {
		return 0
	}
	if err := syscall.GetProcessTimes(h, &creation, &exit, &kernel, &user); err != nil {
		return 0
	}
	return filetimeDuration(kernel) + filetimeDuration(user)
}

// filetimeDuration is an interval given as a FILETIME (100 ns units).
func filetimeDuration(ft syscall.Filetime) time.Duration {
	return time.Duration(uint64(ft.HighDateTime)<<32|uint64(ft.LowDateTime)) * 100
}

// maxOpenFiles has no counterpart on Windows, which limits sockets by memory
// and ephemeral ports rather than by a per-process descriptor limit.
func maxOpenFiles() int { return math.MaxInt32 }

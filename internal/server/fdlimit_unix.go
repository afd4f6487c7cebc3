//go:build unix

package server

import "syscall"

// descriptorLimit is the process's limit on open descriptors (RLIMIT_NOFILE's
// soft value, which the Go runtime raises to the hard one at start), or 0
// when it cannot be read.
func descriptorLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return uint64(rl.Cur) //nolint:unconvert // int64 on some systems
}

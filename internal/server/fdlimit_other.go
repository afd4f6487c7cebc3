//go:build !unix

package server

// descriptorLimit is 0 (unknown) where there is no RLIMIT_NOFILE: no
// connection limit is derived from it.
func descriptorLimit() uint64 { return 0 }

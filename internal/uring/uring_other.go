//go:build !linux || herald_portable

package uring

import "errors"

// Off Linux, and on Linux with the herald_portable build tag (which tests
// the portable paths), there is no io_uring: New always fails.

// ErrUnsupported is returned by New: io_uring is Linux's.
var ErrUnsupported = errors.New("io_uring unavailable")

// ErrNotSubmitted is never returned here.
var ErrNotSubmitted = errors.New("io_uring refused the submission")

// Ring is never made here; its methods exist so callers compile.
type Ring struct{}

// New reports that there is no io_uring here.
func New(int) (*Ring, error) { return nil, ErrUnsupported }

func (*Ring) Close() error                 { return nil }
func (*Ring) Entries() int                 { return 0 }
func (*Ring) Prepared() int                { return 0 }
func (*Ring) PrepSend(int, []byte, uint64) {}
func (*Ring) Submit([]int32) error         { return ErrUnsupported }

// Retryable is false: there is nothing to retry here.
func Retryable(error) bool { return false }

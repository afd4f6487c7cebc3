//go:build !linux || 386

package bench

import "context"

// The epoll receive path is Linux-only, and not built for 386 (which has no
// SYS_SOCKET: its socket calls go through socketcall); elsewhere only
// --reader goroutine is valid (Config.Validate and newLocalFleet refuse
// epoll).

const (
	defaultReader  = "goroutine"
	epollSupported = false
)

type rxState struct{ closed bool }

type rxLoop struct{}

type rxOut struct{ rng uint64 }

type rxSetup struct{}

func (f *localFleet) startLoops() error               { return errNoEpoll }
func (f *localFleet) stopLoops()                      {}
func (f *localFleet) connectRaw(context.Context, int) {}
func (f *localFleet) closeDetached(*bconn, *rxOut)    {}
func (f *localFleet) closeSetups()                    {}

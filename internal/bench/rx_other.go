//go:build !linux

package bench

// The epoll receive path is Linux-only; elsewhere only --reader goroutine
// is valid (Config.Validate and newLocalFleet refuse epoll).

const (
	defaultReader  = "goroutine"
	epollSupported = false
)

type rxState struct{ closed bool }

type rxLoop struct{}

type rxOut struct{ rng uint64 }

func (f *localFleet) startLoops() error            { return errNoEpoll }
func (f *localFleet) stopLoops()                   {}
func (f *localFleet) detach(*bconn) error          { return errNoEpoll }
func (f *localFleet) register(*bconn, int) error   { return errNoEpoll }
func (f *localFleet) frames(*bconn, *rxOut) string { return "" }
func (f *localFleet) closeDetached(*bconn, *rxOut) {}
func (f *localFleet) dropDetached(*bconn, string)  {}

//go:build !linux || herald_portable

package netpoll

// readinessDriven: the portable poller runs a handler again as soon as it
// calls Resume, and the handler's read waits for data.
const readinessDriven = false

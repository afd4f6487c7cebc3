package hub

// Windows has no writev(2) on sockets, and rawio.RawConn gives clients no
// RawConn there: tryWritev returns before run, and every client is written
// through its net.Conn (blockingWrite).

type iovec struct{}

// run is never reached (see above); it writes nothing, as a socket that
// takes nothing would, and the batch goes to blockingWrite.
func (w *writev) run(uintptr) {}

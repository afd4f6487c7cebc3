//go:build unix

package hub

import (
	"syscall"
	"unsafe"
)

// maxIovecs is the most buffers one writev takes (Linux IOV_MAX).
const maxIovecs = 1024

type iovec = syscall.Iovec

// run writes w.batch to fd (inside RawConn.Control).
func (w *writev) run(fd uintptr) {
	batch := w.batch
	for i := 0; i < len(batch); {
		v := w.iov[:0]
		want := 0
		j := i // the first buffer after this call's
		for ; j < len(batch) && len(v) < maxIovecs; j++ {
			if len(batch[j]) == 0 {
				continue
			}
			iov := syscall.Iovec{Base: &batch[j][0]}
			iov.SetLen(len(batch[j]))
			v = append(v, iov)
			want += len(batch[j])
		}
		w.iov, w.used = v, max(w.used, len(v))
		if len(v) == 0 {
			w.done = true
			return
		}
		// RawSyscall, not Syscall: the socket is non-blocking, so the call
		// never waits, and the runtime does not see a worker in a system
		// call, so sysmon does not retake its P while it writes a fan-out
		// back to back (docs/performance.md).
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return
		case e != 0:
			w.err = e
			return
		}
		w.n += int(m)
		if int(m) < want {
			return
		}
		i = j // not i += len(v): empty buffers took no iovec
	}
	w.done = true
}

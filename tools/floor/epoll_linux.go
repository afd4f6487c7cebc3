package main

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	defaultReader  = "epoll"
	epollSupported = true
)

// epollReader reads the fanout with the bench generator's default receive
// path (--reader epoll): two loops, each an epoll instance over raw
// non-blocking sockets, one read(2) per readiness event. The epoll
// descriptor sits in Go's poller and the loop parks there, then collects the
// ready sockets with a non-blocking epoll_wait, as internal/bench does.
// connected is called once every socket is connected. It returns the bytes
// read and, per socket, the latencies it saw.
func epollReader(o options, connected func()) (int64, [][]time.Duration, error) {
	ta, err := net.ResolveTCPAddr("tcp4", o.addr)
	if err != nil {
		return 0, nil, err
	}
	sa := &syscall.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	fds := make([]int, 0, o.conns)
	defer func() {
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
	}()
	for range o.conns {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, nil, os.NewSyscallError("socket", err)
		}
		fds = append(fds, fd)
		if err := syscall.Connect(fd, sa); err != nil {
			return 0, nil, os.NewSyscallError("connect", err)
		}
		if err := syscall.SetNonblock(fd, true); err != nil {
			return 0, nil, os.NewSyscallError("fcntl", err)
		}
	}
	connected()
	lats := make([][]time.Duration, len(fds))
	pending := make([]int, len(fds)) // per socket: bytes of a message cut by the previous read
	var got atomic.Int64
	const loops = 2
	var wg sync.WaitGroup
	errs := make([]error, loops)
	for k := range loops {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return 0, nil, os.NewSyscallError("epoll_create1", err)
		}
		if err := syscall.SetNonblock(epfd, true); err != nil {
			_ = syscall.Close(epfd)
			return 0, nil, os.NewSyscallError("fcntl", err)
		}
		ep := os.NewFile(uintptr(epfd), "epoll") // closes epfd when the loop ends
		rc, err := ep.SyscallConn()
		if err != nil {
			_ = ep.Close()
			return 0, nil, err
		}
		for i := k; i < len(fds); i += loops {
			ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}
			if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fds[i], &ev); err != nil {
				_ = ep.Close()
				return 0, nil, os.NewSyscallError("epoll_ctl", err)
			}
		}
		open := (len(fds) - k + loops - 1) / loops // this loop's sockets not yet at EOF
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ep.Close()
			events := make([]syscall.EpollEvent, 256)
			buf := make([]byte, 4096)
			var n int
			var werr error
			collect := func(uintptr) bool {
				n, werr = syscall.EpollWait(epfd, events, 0)
				return n > 0 || werr != nil
			}
			for open > 0 {
				if err := rc.Read(collect); err != nil {
					errs[k] = err
					return
				}
				if werr == syscall.EINTR {
					continue
				}
				if werr != nil {
					errs[k] = os.NewSyscallError("epoll_wait", werr)
					return
				}
				for _, ev := range events[:n] {
					i := int(ev.Fd)
					m, err := syscall.Read(fds[i], buf)
					if err == syscall.EAGAIN || err == syscall.EINTR {
						continue
					}
					if m <= 0 { // EOF or error: the writer is done with this socket
						_ = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, fds[i], nil)
						open--
						continue
					}
					got.Add(int64(m))
					stamps(&lats[i], &pending[i], buf[:m], o.size)
				}
			}
		}()
	}
	wg.Wait() // each loop returns once all its sockets have reached EOF
	for _, err := range errs {
		if err != nil {
			return got.Load(), lats, fmt.Errorf("epoll loop: %w", err)
		}
	}
	return got.Load(), lats, nil
}

package main

import "syscall"

// setRcvbuf sets the receive buffer of socket fd to n bytes, best effort.
func setRcvbuf(fd uintptr, n int) {
	_ = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}

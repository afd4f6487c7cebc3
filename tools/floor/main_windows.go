package main

import (
	"fmt"
	"os"
)

// floor measures this machine with Unix system calls (getrusage, write(2),
// epoll and io_uring on Linux); it does not run on Windows.
func main() {
	fmt.Fprintln(os.Stderr, "floor: runs on Linux (and other Unix systems, without epoll and io_uring), not on Windows")
	os.Exit(2)
}

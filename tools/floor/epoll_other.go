//go:build unix && !linux

package main

import (
	"errors"
	"time"
)

const (
	defaultReader  = "goroutine"
	epollSupported = false
)

func epollReader(options, func()) (int64, [][]time.Duration, error) {
	return 0, nil, errors.New("--reader epoll needs Linux")
}

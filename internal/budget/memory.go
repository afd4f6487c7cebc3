package budget

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Default limits, when none is configured: the process may hold a quarter
// of the memory it may use (the rest is history, the runtime, the kernel's
// socket buffers and headroom for the collector); one user a sixteenth of
// that, at least minUser (one largest reply and a queue, several times
// over) and at most maxUser. Without a known memory size, unknownMemory is
// assumed.
const (
	minProcess    = 64 << 20
	minUser       = 32 << 20
	maxUser       = 256 << 20
	unknownMemory = 4 << 30
)

// DefaultLimit is the process-wide limit for a machine with mem bytes of
// memory (0: unknown).
func DefaultLimit(mem int64) int64 {
	if mem <= 0 {
		mem = unknownMemory
	}
	return max(mem/4, minProcess)
}

// DefaultUserLimit is the per-user limit for a process-wide limit of limit
// bytes.
func DefaultUserLimit(limit int64) int64 {
	return min(max(limit/16, minUser), maxUser)
}

// MachineMemory is the memory this process may use: its cgroup's limit
// (v2 memory.max, or v1 memory.limit_in_bytes) when it has one below the
// machine's, else MemTotal from /proc/meminfo; 0 when neither is known.
func MachineMemory() int64 {
	total := memTotal("/proc/meminfo")
	if cg := cgroupLimit(); cg > 0 && (total == 0 || cg < total) {
		return cg
	}
	return total
}

// memTotal reads MemTotal from a meminfo file, in bytes (0: unknown).
func memTotal(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb <= 0 {
			return 0
		}
		return kb << 10
	}
	return 0
}

// cgroupLimit is the memory limit of this process's cgroup, 0 when it has
// none or it cannot be read.
func cgroupLimit() int64 {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(self, []byte("\n")) {
		// v2: "0::/path"; v1: "N:memory:/path" (or a list of controllers).
		parts := bytes.SplitN(line, []byte(":"), 3)
		if len(parts) != 3 {
			continue
		}
		path := string(parts[2])
		switch {
		case len(parts[1]) == 0:
			if n := readLimit("/sys/fs/cgroup" + path + "/memory.max"); n > 0 {
				return n
			}
		case bytes.Contains(append(append([]byte(","), parts[1]...), ','), []byte(",memory,")):
			if n := readLimit("/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"); n > 0 {
				return n
			}
		}
	}
	return 0
}

// readLimit reads a cgroup memory limit file: a number of bytes, or "max"
// (none, 0). v1's "no limit" is a number near 2^63, taken as none.
func readLimit(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0
	}
	return n
}

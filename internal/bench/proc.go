package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procSample is a reading of a process's memory and CPU.
type procSample struct {
	at     time.Time
	rssKiB int64
	cpu    time.Duration // utime + stime
}

// sampleProc reads VmRSS from /proc/PID/status and utime+stime from
// /proc/PID/stat.
func sampleProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range bytes.Split(status, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(v)
			if len(f) > 0 {
				s.rssKiB, _ = strconv.ParseInt(string(f[0]), 10, 64)
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return s, err
	}
	s.cpu = cpu
	return s, nil
}

// errExited is a process that has died: /proc keeps a zombie's entry (with
// no memory) until its parent reaps it, which an orphan under a PID 1 that
// does not reap may never be.
var errExited = errors.New("the process has exited (a zombie, not reaped yet)")

// parseStatCPU returns utime+stime from the contents of /proc/PID/stat, or
// errExited for a zombie (state Z) or dead (X) process. The command name
// (field 2) may contain spaces and parentheses, so fields are counted from
// the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat")
	}
	f := bytes.Fields(stat[i+1:])
	// After ')': field 3 is state (f[0]); utime is field 14 (f[11]), stime 15 (f[12]).
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat: %d fields", len(f))
	}
	if s := string(f[0]); s == "Z" || s == "X" {
		return 0, errExited
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc stat cpu fields")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

//go:build linux

// Package seccomptest runs a test's body in a child process in which some
// system calls are refused, as a container's seccomp profile refuses them,
// so that a test can check how code copes with that rather than assume it.
//
//	func TestX(t *testing.T) {
//		if !seccomptest.Child(t) {
//			seccomptest.Run(t)
//			return
//		}
//		seccomptest.Deny(t, nr) // from here on nr fails with EPERM
//		...
//	}
package seccomptest

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// envChild names, in the child's environment, the test it runs.
const envChild = "HERALD_SECCOMP_TEST"

// Child reports whether this process is the child that Run started for t.
func Child(t *testing.T) bool { return os.Getenv(envChild) == t.Name() }

// Run runs t (a top-level test) again in a child process, where Child
// reports true, and fails t with the child's output unless the child ran
// it and it passed; a child that skipped skips t.
func Run(t *testing.T) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envChild+"="+t.Name())
	out, err := cmd.CombinedOutput()
	switch {
	case err == nil && bytes.Contains(out, []byte("--- SKIP: "+t.Name()+" ")):
		t.Skipf("the child skipped:\n%s", out)
	case err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name()+" ")):
		t.Fatalf("child process: %v\n%s", err, out)
	}
}

// Deny makes the system calls numbered nrs fail with EPERM, in every
// thread of the process, for the rest of its life: call it only in the
// child. The filter does not check the architecture: it is meant for the
// test binary's own.
func Deny(t *testing.T, nrs ...uintptr) {
	t.Helper()
	if !Child(t) {
		t.Fatal("seccomptest.Deny outside the child process")
	}
	prog := []unix.SockFilter{{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}} // seccomp_data.nr
	for _, nr := range nrs {
		prog = append(prog,
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: uint32(nr)},
			unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)})
	}
	prog = append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW})
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatalf("prctl(PR_SET_NO_NEW_PRIVS): %v", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog))); e != 0 {
		t.Fatalf("seccomp(SECCOMP_SET_MODE_FILTER): %v", e)
	}
}

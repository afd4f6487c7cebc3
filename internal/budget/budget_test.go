package budget

import (
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func TestUserAndProcessLimits(t *testing.T) {
	b := New(100, 60)
	alice, alice2, bob := b.User("alice"), b.User("alice"), b.User("bob")
	if alice != alice2 {
		t.Fatal("two connections of one user have two accounts")
	}
	if !alice.Reserve(Queue, 50) || alice.Reserve(Reply, 11) {
		t.Fatal("the user limit (60) did not hold")
	}
	if b.Refused(User, Reply) != 1 || alice.Used() != 50 || b.Used() != 50 {
		t.Fatalf("refused %d, alice %d, process %d", b.Refused(User, Reply), alice.Used(), b.Used())
	}
	if !bob.Reserve(Read, 50) || bob.Reserve(Read, 1) || b.Refused(Process, Read) != 1 {
		t.Fatalf("the process limit (100) did not hold: bob %d, process %d", bob.Used(), b.Used())
	}
	if bob.Used() != 50 || b.Used() != 100 {
		t.Fatalf("a refused reservation stayed counted: bob %d, process %d", bob.Used(), b.Used())
	}
	if b.Reserve(Keys, 1) || b.Refused(Process, Keys) != 1 {
		t.Fatal("a reservation past the process limit was granted")
	}
	alice.Release(50)
	bob.Release(50)
	if b.Used() != 0 || b.UserUsed("alice") != 0 {
		t.Fatalf("released, still counted: %d", b.Used())
	}
	alice.Close()
	if b.User("alice") != alice {
		t.Fatal("an account with a holder left was forgotten")
	}
	alice.Close()
	alice.Close()
	if b.User("alice") == alice {
		t.Fatal("an account without holders was kept")
	}
	var none *Account
	if !none.Reserve(Queue, math.MaxInt) || none.Used() != 0 {
		t.Fatal("a nil account refuses or counts")
	}
	none.Release(1)
	none.Close()
}

func TestConcurrentReservationsNeverPassTheLimits(t *testing.T) {
	// What is granted — not the counters, which a refused reservation
	// passes for an instant — never passes a limit.
	b := New(1000, 600)
	var wg sync.WaitGroup
	var total atomic.Int64
	for u := range 4 {
		a := b.User(string(rune('a' + u)))
		var granted atomic.Int64
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 2000 {
					if a.Reserve(Queue, 7) {
						if g, tot := granted.Add(7), total.Add(7); g > 600 || tot > 1000 {
							t.Errorf("granted past a limit: user %d, process %d", g, tot)
						}
						granted.Add(-7)
						total.Add(-7)
						a.Release(7)
					}
				}
			}()
		}
	}
	wg.Wait()
	if b.Used() != 0 {
		t.Fatalf("%d bytes left counted", b.Used())
	}
}

func TestDefaults(t *testing.T) {
	if got := DefaultLimit(8 << 30); got != 2<<30 {
		t.Fatalf("8 GiB of memory: %d", got)
	}
	if got := DefaultLimit(0); got != 1<<30 {
		t.Fatalf("unknown memory: %d", got)
	}
	if got := DefaultLimit(100 << 20); got != minProcess {
		t.Fatalf("100 MiB of memory: %d", got)
	}
	for limit, want := range map[int64]int64{1 << 30: 64 << 20, 64 << 20: minUser, 64 << 30: maxUser} {
		if got := DefaultUserLimit(limit); got != want {
			t.Fatalf("user limit of %d: %d, want %d", limit, got, want)
		}
	}
	dir := t.TempDir()
	meminfo := filepath.Join(dir, "meminfo")
	_ = os.WriteFile(meminfo, []byte("MemFree:  100 kB\nMemTotal:       24683748 kB\n"), 0o644)
	if got := memTotal(meminfo); got != 24683748<<10 {
		t.Fatalf("MemTotal: %d", got)
	}
	limit := filepath.Join(dir, "memory.max")
	for content, want := range map[string]int64{"max\n": 0, "1073741824\n": 1 << 30, "9223372036854771712\n": 0} {
		_ = os.WriteFile(limit, []byte(content), 0o644)
		if got := readLimit(limit); got != want {
			t.Fatalf("limit file %q: %d, want %d", content, got, want)
		}
	}
	if MachineMemory() <= 0 {
		t.Fatal("this machine's memory is unknown")
	}
}

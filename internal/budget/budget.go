// Package budget counts the bytes herald holds on behalf of its users — send
// queues, replies, partially received messages, idempotency keys — against a
// process-wide limit and a per-user one, and refuses what would pass either.
//
// Accounting is by reservation: whoever is about to hold n bytes calls
// Reserve first and, when it returns true, Release(n) once it no longer holds
// them. Every Reserve that succeeds must be matched by exactly one Release of
// the same size. Reserve and Release are one or two atomic adds each, with no
// lock: they may be called on the hot path of a fan-out, under other locks.
// What is granted never passes a limit; a reservation refused near a limit
// is counted for an instant before it is taken back, so another made in
// that instant may be refused too.
package budget

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Kind is what a reservation holds; refusals are counted per kind.
type Kind uint8

const (
	Queue Kind = iota // frames queued to a connection (or being written)
	Reply             // a history reply, a replay or a presence list
	Read              // a message being received, not yet complete
	Keys              // idempotency keys remembered by the broker
	numKinds
)

func (k Kind) String() string {
	switch k {
	case Queue:
		return "queue"
	case Reply:
		return "reply"
	case Read:
		return "read"
	case Keys:
		return "idempotency"
	}
	return "unknown"
}

// Scope says which limit refused a reservation.
type Scope uint8

const (
	User    Scope = iota // the user's limit
	Process              // the process-wide limit
	numScopes
)

func (s Scope) String() string {
	if s == User {
		return "user"
	}
	return "process"
}

const numShards = 32

// Budget is the process-wide account and the index of user accounts. The
// zero value is not usable; call New. All methods are safe for concurrent
// use.
type Budget struct {
	limit     int64 // process-wide; 0: no limit
	userLimit int64 // per user; 0: no limit
	used      atomic.Int64
	refused   [numScopes][numKinds]atomic.Int64
	seed      maphash.Seed
	shards    [numShards]userShard
}

type userShard struct {
	mu    sync.Mutex
	users map[string]*Account
}

// New makes a budget of limit bytes for the whole process and userLimit
// bytes for each user; 0 means no limit for either.
func New(limit, userLimit int64) *Budget {
	b := &Budget{limit: limit, userLimit: userLimit, seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].users = make(map[string]*Account)
	}
	return b
}

// Limit is the process-wide limit (0: none).
func (b *Budget) Limit() int64 { return b.limit }

// UserLimit is the per-user limit (0: none).
func (b *Budget) UserLimit() int64 { return b.userLimit }

// Used is how many bytes are reserved in the whole process.
func (b *Budget) Used() int64 { return b.used.Load() }

// Refused is how many reservations of kind the limit of scope refused.
func (b *Budget) Refused(scope Scope, kind Kind) int64 { return b.refused[scope][kind].Load() }

// Reserve counts n more bytes of kind held for no user in particular (the
// broker's idempotency keys), unless that would pass the process limit.
func (b *Budget) Reserve(kind Kind, n int64) bool {
	if !b.reserve(n) {
		b.refused[Process][kind].Add(1)
		return false
	}
	return true
}

// Release gives back n bytes reserved with Reserve.
func (b *Budget) Release(n int64) { b.used.Add(-n) }

func (b *Budget) reserve(n int64) bool {
	u := b.used.Add(n)
	if b.limit > 0 && u > b.limit && n > 0 {
		b.used.Add(-n)
		return false
	}
	return true
}

// User returns userID's account, made if needed, with one more holder:
// every call must be matched by one Account.Close. Connections of the same
// user share one account.
func (b *Budget) User(userID string) *Account {
	sh := &b.shards[maphash.String(b.seed, userID)%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	a := sh.users[userID]
	if a == nil {
		a = &Account{b: b, id: userID}
		sh.users[userID] = a
	}
	a.holders++
	return a
}

// UserUsed is how many bytes userID has reserved (0 when it holds no
// account).
func (b *Budget) UserUsed(userID string) int64 {
	sh := &b.shards[maphash.String(b.seed, userID)%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if a := sh.users[userID]; a != nil {
		return a.used.Load()
	}
	return 0
}

// Account is one user's share of a Budget. A nil *Account reserves
// everything and counts nothing: connections made without a budget.
type Account struct {
	b       *Budget
	id      string
	used    atomic.Int64
	holders int // guarded by the shard's mu
}

// Reserve counts n more bytes of kind held for the user, unless that would
// pass the user's limit or the process's; it reports whether it did.
func (a *Account) Reserve(kind Kind, n int) bool {
	if a == nil || n <= 0 {
		return true
	}
	v := int64(n)
	u := a.used.Add(v)
	if a.b.userLimit > 0 && u > a.b.userLimit {
		a.used.Add(-v)
		a.b.refused[User][kind].Add(1)
		return false
	}
	if !a.b.reserve(v) {
		a.used.Add(-v)
		a.b.refused[Process][kind].Add(1)
		return false
	}
	return true
}

// Release gives back n bytes the user reserved.
func (a *Account) Release(n int) {
	if a == nil || n <= 0 {
		return
	}
	a.used.Add(-int64(n))
	a.b.used.Add(-int64(n))
}

// Used is how many bytes the user has reserved.
func (a *Account) Used() int64 {
	if a == nil {
		return 0
	}
	return a.used.Load()
}

// Close drops one holder of the account (see Budget.User); the account is
// forgotten once it has none. What it still has reserved stays counted
// until released.
func (a *Account) Close() {
	if a == nil {
		return
	}
	sh := &a.b.shards[maphash.String(a.b.seed, a.id)%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	a.holders--
	if a.holders == 0 && sh.users[a.id] == a {
		delete(sh.users, a.id)
	}
}

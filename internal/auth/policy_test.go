package auth

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/protocol"
)

var allOps = []Op{OpSubscribe, OpPublish, OpHistory, OpPresence}

func boolPtr(b bool) *bool { return &b }

// codeOf returns "" for nil, else the protocol code of err; it fails the
// test when err is not a *protocol.Error.
func codeOf(t *testing.T, err error) protocol.Code {
	t.Helper()
	if err == nil {
		return ""
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *protocol.Error", err, err)
	}
	if pe.Message == "" {
		t.Errorf("error %v has an empty message", err)
	}
	return pe.Code
}

const (
	allowed   protocol.Code = ""
	forbid                  = protocol.CodeForbidden
	invalidCh               = protocol.CodeInvalidChannel
)

// TestAuthorizeAllOps covers rules that give the same answer for every op.
func TestAuthorizeAllOps(t *testing.T) {
	alice := Identity{UserID: "alice", OrgID: "42"}
	bob := Identity{UserID: "bob", OrgID: "7"}
	org4 := Identity{UserID: "carol", OrgID: "4"}
	noOrg := Identity{UserID: "dave"}
	email := Identity{UserID: "eve.smith@example.com", OrgID: "acme"}
	weird := Identity{UserID: "frank smith", OrgID: "a b"}
	colon := Identity{UserID: "a:b", OrgID: "x:y"}
	anon := Identity{}

	tests := []struct {
		name    string
		id      Identity
		channel string
		want    protocol.Code
	}{
		// Invalid names, whoever asks.
		{"empty name", alice, "", invalidCh},
		{"space", alice, "chat room", invalidCh},
		{"slash", alice, "chat/room", invalidCh},
		{"star", alice, "docs:*", invalidCh},
		{"non-ascii", alice, "chät", invalidCh},
		{"newline", alice, "chat\n", invalidCh},
		{"too long", alice, strings.Repeat("a", protocol.MaxChannelLen+1), invalidCh},
		{"max length ok", alice, strings.Repeat("a", protocol.MaxChannelLen), allowed},
		{"invalid org channel is invalid not forbidden", bob, "org:42 x", invalidCh},

		// Seed channels and ordinary names are open.
		{"chat", alice, "chat", allowed},
		{"notifications", bob, "notifications", allowed},
		{"analytics", noOrg, "analytics", allowed},
		{"documents", anon, "documents", allowed},
		{"sub channel", alice, "chat:general", allowed},
		{"looks like org but is not", bob, "organization:42", allowed},
		{"orgs plural", bob, "orgs:42", allowed},
		{"users plural", bob, "users:alice", allowed},
		{"systems plural", bob, "systems", allowed},
		{"org later segment", bob, "chat:org:42", allowed},
		{"user later segment", bob, "chat:user:alice", allowed},

		// Org channels: own org only.
		{"own org", alice, "org:42", allowed},
		{"own org sub", alice, "org:42:chat", allowed},
		{"own org deep", alice, "org:42:a:b:c", allowed},
		{"other org", bob, "org:42", forbid},
		{"other org sub", bob, "org:42:chat", forbid},
		{"org 4 vs 42", org4, "org:42", forbid},
		{"org 4 vs 42 sub", org4, "org:42:x", forbid},
		{"org 42 vs 4", alice, "org:4", forbid},
		{"org 42 vs 420", alice, "org:420", forbid},
		{"org prefix of own id", alice, "org:4", forbid},
		{"no org claim", noOrg, "org:42", forbid},
		{"anonymous", anon, "org:42", forbid},
		{"bare org", alice, "org", forbid},
		{"org colon", alice, "org:", forbid},
		{"org empty id", alice, "org::x", forbid},
		{"org empty id, no org claim", noOrg, "org::x", forbid},
		{"org empty id, no org claim, bare", noOrg, "org:", forbid},
		{"org id case differs", email, "org:ACME", forbid},
		{"org id case matches", email, "org:acme", allowed},
		{"org id not a channel id", weird, "org:a", forbid},
		{"org id with colon cannot match", colon, "org:x:y", forbid},
		{"org id with colon, prefix owner", colon, "org:x", forbid},

		// Misspelled reserved prefixes are forbidden to all.
		{"ORG own", alice, "ORG:42", forbid},
		{"Org own", alice, "Org:42", forbid},
		{"oRg other", bob, "oRg:42", forbid},
		{"ORG sub", alice, "ORG:42:x", forbid},
		{"USER own", alice, "USER:alice", forbid},
		{"User other", bob, "User:alice", forbid},
		{"SYSTEM", alice, "SYSTEM", forbid},
		{"System sub", alice, "System:news", forbid},

		// User channels: own user only.
		{"own user", alice, "user:alice", allowed},
		{"own user sub", alice, "user:alice:inbox", allowed},
		{"other user", bob, "user:alice", forbid},
		{"other user sub", bob, "user:alice:inbox", forbid},
		{"user prefix of id", Identity{UserID: "ali"}, "user:alice", forbid},
		{"id prefix of user", Identity{UserID: "alice2"}, "user:alice", forbid},
		{"user id case differs", alice, "user:Alice", forbid},
		{"email user", email, "user:eve.smith@example.com", allowed},
		{"email user sub", email, "user:eve.smith@example.com:inbox", allowed},
		{"other email user", alice, "user:eve.smith@example.com", forbid},
		{"email user case differs", Identity{UserID: "Eve.Smith@example.com"}, "user:eve.smith@example.com", forbid},
		{"anonymous user channel", anon, "user:", forbid},
		{"anonymous bare user", anon, "user", forbid},
		{"bare user", alice, "user", forbid},
		{"user colon", alice, "user:", forbid},
		{"user empty id", alice, "user::x", forbid},
		{"user id not a channel id", weird, "user:frank", forbid},
		{"user id with colon has no channel", colon, "user:a:b", forbid},
		{"user id with colon, prefix owner", colon, "user:a", forbid},
		{"user owning colon sub", Identity{UserID: "a"}, "user:a:b", allowed},
	}
	p := presencePolicy() // presence on everywhere, so every op follows the tenant rules
	for _, tt := range tests {
		for _, op := range allOps {
			t.Run(tt.name+"/"+op.String(), func(t *testing.T) {
				got := codeOf(t, p.Authorize(tt.id, op, tt.channel))
				if got != tt.want {
					t.Errorf("Authorize(%+v, %v, %q) = %q, want %q", tt.id, op, tt.channel, got, tt.want)
				}
			})
		}
	}
}

func TestAuthorizeSystem(t *testing.T) {
	ns := []config.Namespace{
		{Prefix: "system", Publish: boolPtr(true), Presence: boolPtr(true)}, // cannot relax the built-in rule
		{Prefix: "", Publish: boolPtr(true)},
	}
	for _, p := range []*Policy{presencePolicy(), NewPolicy(ns)} {
		for _, channel := range []string{"system", "system:news", "system:a:b"} {
			for _, id := range []Identity{{UserID: "alice"}, {UserID: "admin", Role: "admin", OrgID: "1"}, {}} {
				for _, op := range allOps {
					want := allowed
					if op == OpPublish {
						want = forbid
					}
					if got := codeOf(t, p.Authorize(id, op, channel)); got != want {
						t.Errorf("Authorize(%+v, %v, %q) = %q, want %q", id, op, channel, got, want)
					}
				}
			}
		}
	}
}

func TestAuthorizeAllowList(t *testing.T) {
	id := func(chs ...string) Identity {
		return Identity{UserID: "alice", OrgID: "42", Channels: chs}
	}
	tests := []struct {
		name    string
		id      Identity
		op      Op
		channel string
		want    protocol.Code
	}{
		{"nil list is unrestricted", id(), OpSubscribe, "anything", allowed},
		{"empty list allows nothing", Identity{UserID: "a", Channels: []string{}}, OpSubscribe, "anything", forbid},
		{"empty list allows not even the user's own", Identity{UserID: "a", Channels: []string{}}, OpSubscribe, "user:a", forbid},
		{"exact match", id("chat"), OpSubscribe, "chat", allowed},
		{"exact is not prefix", id("chat"), OpSubscribe, "chat:room", forbid},
		{"exact is not longer", id("chat:room"), OpSubscribe, "chat", forbid},
		{"not listed", id("chat"), OpSubscribe, "documents", forbid},
		{"pattern", id("docs:*"), OpSubscribe, "docs:123", allowed},
		{"pattern deep", id("docs:*"), OpHistory, "docs:1:2", allowed},
		{"pattern needs the colon", id("docs:*"), OpSubscribe, "docs", forbid},
		{"pattern other prefix", id("docs:*"), OpSubscribe, "doc:1", forbid},
		{"bare star prefix", id("docs*"), OpSubscribe, "docsecret", allowed},
		{"star alone", id("*"), OpPresence, "anything", allowed},
		{"one of many", id("chat", "docs:*", "notifications"), OpSubscribe, "notifications", allowed},
		{"none of many", id("chat", "docs:*", "notifications"), OpSubscribe, "analytics", forbid},
		{"empty entry matches nothing", id(""), OpSubscribe, "chat", forbid},
		{"star in middle is literal", id("a*b"), OpSubscribe, "axb", forbid},
		{"applies to publish", id("chat"), OpPublish, "documents", forbid},
		{"allows publish when listed", id("chat"), OpPublish, "chat", allowed},
		{"applies to system", id("chat"), OpSubscribe, "system", forbid},
		{"system listed", id("chat", "system"), OpSubscribe, "system", allowed},
		{"system listed still no publish", id("system*"), OpPublish, "system:news", forbid},

		// The allow-list can never widen tenant rules.
		{"own org listed", id("org:42:*"), OpSubscribe, "org:42:chat", allowed},
		{"own org not listed", id("chat"), OpSubscribe, "org:42", forbid},
		{"other org listed", id("org:7"), OpSubscribe, "org:7", forbid},
		{"other org via pattern", id("org:*"), OpSubscribe, "org:7", forbid},
		{"own org via pattern", id("org:*"), OpSubscribe, "org:42", allowed},
		{"org 42 pattern does not reach 420", id("org:42*"), OpSubscribe, "org:420", forbid},
		{"other user listed", id("user:bob"), OpSubscribe, "user:bob", forbid},
		{"other user via star", id("*"), OpPublish, "user:bob:inbox", forbid},
		{"own user via pattern", id("user:alice:*"), OpPublish, "user:alice:inbox", allowed},
		{"misspelled org listed", id("ORG:42"), OpSubscribe, "ORG:42", forbid},
		{"bare org listed", id("org"), OpSubscribe, "org", forbid},
		{"invalid name listed", id("a b"), OpSubscribe, "a b", invalidCh},
	}
	p := presencePolicy() // presence on everywhere, so every op follows the tenant rules
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := codeOf(t, p.Authorize(tt.id, tt.op, tt.channel))
			if got != tt.want {
				t.Errorf("Authorize(%+v, %v, %q) = %q, want %q", tt.id, tt.op, tt.channel, got, tt.want)
			}
		})
	}
}

func TestAuthorizeNamespacePublish(t *testing.T) {
	p := NewPolicy([]config.Namespace{
		{Prefix: "news", Publish: boolPtr(false)},
		{Prefix: "news:comments", Publish: boolPtr(true)},
		{Prefix: "chat"},                         // nil Publish = true
		{Prefix: "org", Publish: boolPtr(false)}, // applies to tenant channels too
		{Prefix: "feeds", Publish: boolPtr(false), Presence: boolPtr(true)},
	})
	alice := Identity{UserID: "alice", OrgID: "42"}
	tests := []struct {
		op      Op
		channel string
		want    protocol.Code
	}{
		{OpPublish, "news", forbid},
		{OpPublish, "news:today", forbid},
		{OpPublish, "news:comments", allowed},
		{OpPublish, "news:comments:1", allowed},
		{OpPublish, "news:commentsx", forbid},
		{OpPublish, "newsroom", allowed}, // not in the "news" namespace
		{OpPublish, "chat", allowed},
		{OpPublish, "chat:x", allowed},
		{OpPublish, "org:42", forbid},
		{OpPublish, "org:42:x", forbid},
		{OpPublish, "user:alice", allowed},
		{OpPublish, "feeds:x", forbid},
		{OpPublish, "other", allowed},
		// Non-publish ops ignore Publish.
		{OpSubscribe, "news", allowed},
		{OpHistory, "news:today", allowed},
		{OpPresence, "feeds", allowed},
		{OpSubscribe, "org:42", allowed},
	}
	for _, tt := range tests {
		t.Run(tt.op.String()+"/"+tt.channel, func(t *testing.T) {
			if got := codeOf(t, p.Authorize(alice, tt.op, tt.channel)); got != tt.want {
				t.Errorf("Authorize(%v, %q) = %q, want %q", tt.op, tt.channel, got, tt.want)
			}
		})
	}

	// A default rule that forbids publishing applies to unmatched channels.
	closed := NewPolicy([]config.Namespace{{Prefix: "", Publish: boolPtr(false)}, {Prefix: "chat"}})
	if got := codeOf(t, closed.Authorize(alice, OpPublish, "documents")); got != forbid {
		t.Errorf("closed default: publish documents = %q, want forbidden", got)
	}
	if got := codeOf(t, closed.Authorize(alice, OpPublish, "chat:1")); got != allowed {
		t.Errorf("closed default: publish chat:1 = %q, want allowed", got)
	}
}

func TestAuthorizeUnknownOp(t *testing.T) {
	p := NewPolicy(nil)
	for _, op := range []Op{-1, OpPresence + 1, 99} {
		if got := codeOf(t, p.Authorize(Identity{UserID: "a"}, op, "chat")); got != forbid {
			t.Errorf("Authorize(op %d) = %q, want forbidden", op, got)
		}
	}
	// An invalid name is reported as such even with an unknown op.
	if got := codeOf(t, p.Authorize(Identity{UserID: "a"}, 99, "a b")); got != invalidCh {
		t.Errorf("Authorize(op 99, invalid) = %q, want invalid_channel", got)
	}
}

// TestAuthorizeMessagesDoNotLeak checks that refusals never echo the other
// tenant's id or the caller's own ids.
func TestAuthorizeMessagesDoNotLeak(t *testing.T) {
	p := NewPolicy(nil)
	id := Identity{UserID: "secret-user", OrgID: "secret-org"}
	for _, channel := range []string{"org:victim-org", "org:victim-org:x", "user:victim-user"} {
		err := p.Authorize(id, OpSubscribe, channel)
		var pe *protocol.Error
		if !errors.As(err, &pe) || pe.Code != protocol.CodeForbidden {
			t.Fatalf("Authorize(%q) = %v, want forbidden", channel, err)
		}
		for _, s := range []string{"victim", "secret"} {
			if strings.Contains(pe.Message, s) {
				t.Errorf("message %q for %q contains %q", pe.Message, channel, s)
			}
		}
		if pe.Message != strings.ToLower(pe.Message[:1])+pe.Message[1:] {
			t.Errorf("message %q should start lowercase", pe.Message)
		}
	}
}

func TestNamespace(t *testing.T) {
	p := NewPolicy([]config.Namespace{
		{Prefix: "chat", Echo: true},
		{Prefix: "chat:support", Publish: boolPtr(false)},
		{Prefix: "chat:support:vip", Echo: true},
		{Prefix: "a", Publish: boolPtr(false)},
		{Prefix: "a:b:c", Echo: true},
		{Prefix: "dup", Echo: true},
		{Prefix: "dup", Publish: boolPtr(false)}, // last wins
		{Prefix: "system", Echo: true, Publish: boolPtr(true)},
		{Prefix: "", Echo: true},
	})
	tests := []struct {
		channel string
		want    Resolved
	}{
		{"chat", Resolved{Prefix: "chat", Publish: true, Echo: true}},
		{"chat:general", Resolved{Prefix: "chat", Publish: true, Echo: true}},
		{"chat:support", Resolved{Prefix: "chat:support", Publish: false}},
		{"chat:support:1", Resolved{Prefix: "chat:support", Publish: false}},
		{"chat:supportive", Resolved{Prefix: "chat", Publish: true, Echo: true}},
		{"chat:support:vip", Resolved{Prefix: "chat:support:vip", Publish: true, Echo: true}},
		{"chat:support:vip:9", Resolved{Prefix: "chat:support:vip", Publish: true, Echo: true}},
		{"chatter", Resolved{Prefix: "", Publish: true, Echo: true}},
		{"cha", Resolved{Prefix: "", Publish: true, Echo: true}},
		{"a", Resolved{Prefix: "a", Publish: false}},
		{"a:b", Resolved{Prefix: "a", Publish: false}},
		{"a:b:c", Resolved{Prefix: "a:b:c", Publish: true, Echo: true}},
		{"a:b:cd", Resolved{Prefix: "a", Publish: false}},
		{"ab", Resolved{Prefix: "", Publish: true, Echo: true}},
		{"dup", Resolved{Prefix: "dup", Publish: false}},
		{"system", Resolved{Prefix: "system", Publish: false, Echo: true}},
		{"system:x", Resolved{Prefix: "system", Publish: false, Echo: true}},
		{"documents", Resolved{Prefix: "", Publish: true, Echo: true}},
		{"", Resolved{Prefix: "", Publish: true, Echo: true}},
	}
	for _, tt := range tests {
		tt.want.AllowHistory = true
		if got := p.Namespace(tt.channel); got != tt.want {
			t.Errorf("Namespace(%q) = %+v, want %+v", tt.channel, got, tt.want)
		}
	}
}

func TestNamespaceDefaults(t *testing.T) {
	for name, p := range map[string]*Policy{"nil policy": nil, "no namespaces": NewPolicy(nil), "empty": NewPolicy([]config.Namespace{})} {
		t.Run(name, func(t *testing.T) {
			want := map[string]Resolved{
				"chat":        {Publish: true, AllowHistory: true},
				"org:42":      {Publish: true, AllowHistory: true, HistorySize: OrgHistorySize, HistoryTTL: OrgHistoryTTL, Presence: true},
				"system":      {Publish: false, AllowHistory: true},
				"system:news": {Publish: false, AllowHistory: true},
				"systemic":    {Publish: true, AllowHistory: true},
			}
			for ch, w := range want {
				if got := p.Namespace(ch); got != w {
					t.Errorf("Namespace(%q) = %+v, want %+v", ch, got, w)
				}
			}
			if err := p.Authorize(Identity{UserID: "a"}, OpPublish, "chat"); err != nil {
				t.Errorf("Authorize publish chat = %v", err)
			}
			if err := p.Authorize(Identity{UserID: "a"}, OpPublish, "system"); err == nil {
				t.Error("Authorize publish system allowed")
			}
		})
	}
}

func TestNewPolicyDoesNotAliasInput(t *testing.T) {
	pub := true
	ns := []config.Namespace{{Prefix: "chat", Publish: &pub}}
	p := NewPolicy(ns)
	pub = false
	ns[0].Prefix = "other"
	if got := p.Namespace("chat"); got.Prefix != "chat" || !got.Publish {
		t.Errorf("Namespace(chat) after mutating input = %+v", got)
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[Op]string{OpSubscribe: "subscribe", OpPublish: "publish", OpHistory: "history", OpPresence: "presence", 42: "unknown"} {
		if got := op.String(); got != want {
			t.Errorf("Op(%d).String() = %q, want %q", int(op), got, want)
		}
	}
}

func TestAuthorizeConcurrent(t *testing.T) {
	p := NewPolicy([]config.Namespace{{Prefix: "chat", Echo: true}})
	id := Identity{UserID: "alice", OrgID: "42", Channels: []string{"chat*", "org:42:*"}}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if err := p.Authorize(id, OpPublish, "chat:1"); err != nil {
					t.Error(err)
					return
				}
				if err := p.Authorize(id, OpSubscribe, "org:7:x"); err == nil {
					t.Error("cross-tenant subscribe allowed")
					return
				}
			}
		})
	}
	wg.Wait()
}

func benchPolicy() *Policy {
	return NewPolicy([]config.Namespace{
		{Prefix: "chat", Echo: true},
		{Prefix: "chat:support", Publish: boolPtr(false)},
		{Prefix: "news", Publish: boolPtr(false)},
		{Prefix: "documents"},
		{Prefix: "analytics", Publish: boolPtr(false)},
		{Prefix: ""},
	})
}

var benchCases = []struct {
	name    string
	id      Identity
	op      Op
	channel string
}{
	{"plain", Identity{UserID: "alice"}, OpSubscribe, "chat"},
	{"publish_ns", Identity{UserID: "alice"}, OpPublish, "chat:room:12345"},
	{"org", Identity{UserID: "alice", OrgID: "42"}, OpPublish, "org:42:documents:abc"},
	{"user", Identity{UserID: "alice@example.com"}, OpSubscribe, "user:alice@example.com:inbox"},
	{"allowlist", Identity{UserID: "alice", OrgID: "42", Channels: []string{"chat", "notifications", "docs:*", "org:42:*"}}, OpPublish, "org:42:x"},
	{"system", Identity{UserID: "alice"}, OpHistory, "system:announcements"},
}

func TestAuthorizeAllowedPathDoesNotAllocate(t *testing.T) {
	p := benchPolicy()
	for _, bc := range benchCases {
		if err := p.Authorize(bc.id, bc.op, bc.channel); err != nil {
			t.Fatalf("%s: %v", bc.name, err)
		}
		allocs := testing.AllocsPerRun(100, func() {
			_ = p.Authorize(bc.id, bc.op, bc.channel)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per Authorize, want 0", bc.name, allocs)
		}
	}
}

func BenchmarkAuthorize(b *testing.B) {
	p := benchPolicy()
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Authorize(bc.id, bc.op, bc.channel); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("forbidden", func(b *testing.B) {
		id := Identity{UserID: "alice", OrgID: "4"}
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Authorize(id, OpSubscribe, "org:42"); err == nil {
				b.Fatal("allowed")
			}
		}
	})
}

func TestNamespaceHistoryAndPresence(t *testing.T) {
	p := NewPolicy([]config.Namespace{
		{Prefix: "feed", HistorySize: 50},
		{Prefix: "audit", HistorySize: 10, HistoryTTL: config.Duration(time.Hour), AllowHistory: boolPtr(false)},
		{Prefix: "room", Presence: boolPtr(true), JoinLeave: true},
		{Prefix: "org", Presence: boolPtr(false)}, // replaces the org: defaults
	})
	cases := map[string]Resolved{
		"feed:1": {Prefix: "feed", Publish: true, AllowHistory: true, HistorySize: 50, HistoryTTL: DefaultHistoryTTL},
		"audit":  {Prefix: "audit", Publish: true, HistorySize: 10, HistoryTTL: time.Hour},
		"room:a": {Prefix: "room", Publish: true, AllowHistory: true, Presence: true, JoinLeave: true},
		"org:42": {Prefix: "org", Publish: true, AllowHistory: true},
		"chat":   {Publish: true, AllowHistory: true},
	}
	for ch, want := range cases {
		if got := p.Namespace(ch); got != want {
			t.Errorf("Namespace(%q) = %+v, want %+v", ch, got, want)
		}
	}
	id := Identity{UserID: "u", OrgID: "42"}
	for _, tc := range []struct {
		op      Op
		channel string
		ok      bool
	}{
		{OpHistory, "feed:1", true},
		{OpHistory, "audit", false},
		{OpPresence, "room:a", true},
		{OpPresence, "chat", false},
		{OpPresence, "org:42", false},
		{OpPresence, "org:7", false},
		{OpHistory, "org:7", false},
	} {
		err := p.Authorize(id, tc.op, tc.channel)
		if (err == nil) != tc.ok {
			t.Errorf("Authorize(%v, %q) = %v, want ok=%v", tc.op, tc.channel, err, tc.ok)
		}
	}
	// With no namespace for org, rooms get presence by default.
	if err := NewPolicy(nil).Authorize(id, OpPresence, "org:42"); err != nil {
		t.Errorf("org presence by default: %v", err)
	}
}

// presencePolicy is the default policy with presence allowed everywhere.
func presencePolicy() *Policy {
	return NewPolicy([]config.Namespace{{Prefix: "", Presence: boolPtr(true)}})
}

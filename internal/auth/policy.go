package auth

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/protocol"
)

// Op is a client action on a channel, checked by [Policy.Authorize].
type Op int

// Client operations.
const (
	OpSubscribe Op = iota // receive a channel's publications
	OpPublish             // send a "message" to a channel
	OpHistory             // read a channel's recent messages
	OpPresence            // list who is on a channel
)

// String returns the lowercase name of o, for logs.
func (o Op) String() string {
	switch o {
	case OpSubscribe:
		return "subscribe"
	case OpPublish:
		return "publish"
	case OpHistory:
		return "history"
	case OpPresence:
		return "presence"
	default:
		return "unknown"
	}
}

// Reserved channel prefixes with built-in tenant rules.
const (
	prefixOrg    = "org"
	prefixUser   = "user"
	prefixSystem = "system"
)

// Resolved is the effective namespace rule for one channel.
type Resolved struct {
	// Prefix is the matching namespace prefix; "" for the default rule.
	Prefix string
	// Publish reports whether clients may publish. Always false for system
	// channels.
	Publish bool
	// Echo reports whether a client's own publications are delivered back to it.
	Echo bool
	// HistorySize and HistoryTTL are the channel's retention (0: none kept).
	HistorySize int
	HistoryTTL  time.Duration
	// AllowHistory lets clients read history and recover with "since".
	AllowHistory bool
	// Presence lets clients list who is on the channel.
	Presence bool
	// JoinLeave announces subscribers joining and leaving.
	JoinLeave bool
}

// Built-in defaults for org: rooms when no namespace is configured for them.
const (
	OrgHistorySize = 1000
	OrgHistoryTTL  = 5 * time.Minute
	// DefaultHistoryTTL applies when a namespace keeps history without a TTL.
	DefaultHistoryTTL = 5 * time.Minute
)

// Policy decides what an [Identity] may do on a channel. All of herald's
// channel permission checks go through it. A Policy is immutable and safe for
// concurrent use; a nil *Policy behaves like NewPolicy(nil).
type Policy struct {
	// namespaces holds the non-default rules, longest prefix first.
	namespaces []Resolved
	// def is the rule for channels no namespace matches.
	def Resolved
}

// NewPolicy returns a Policy for the configured namespaces. A nil Publish
// means true; a namespace with Prefix "" replaces the default rule (publish
// allowed, no echo). When a prefix appears more than once the last entry wins.
func NewPolicy(ns []config.Namespace) *Policy {
	p := &Policy{def: Resolved{Publish: true, AllowHistory: true}}
	index := make(map[string]int, len(ns))
	for _, n := range ns {
		r := Resolved{
			Prefix:       n.Prefix,
			Publish:      n.Publish == nil || *n.Publish,
			Echo:         n.Echo,
			HistorySize:  n.HistorySize,
			HistoryTTL:   time.Duration(n.HistoryTTL),
			AllowHistory: n.AllowHistory == nil || *n.AllowHistory,
			Presence:     n.Presence != nil && *n.Presence,
			JoinLeave:    n.JoinLeave,
		}
		if r.HistorySize > 0 && r.HistoryTTL == 0 {
			r.HistoryTTL = DefaultHistoryTTL
		}
		if n.Prefix == "" {
			p.def = r
			continue
		}
		if i, ok := index[n.Prefix]; ok {
			p.namespaces[i] = r
			continue
		}
		index[n.Prefix] = len(p.namespaces)
		p.namespaces = append(p.namespaces, r)
	}
	slices.SortFunc(p.namespaces, func(a, b Resolved) int {
		if c := cmp.Compare(len(b.Prefix), len(a.Prefix)); c != 0 {
			return c
		}
		return strings.Compare(a.Prefix, b.Prefix)
	})
	return p
}

// Namespace returns the rules for channel: those of the longest configured
// prefix that equals channel or is followed in it by ':', else the default
// rule. Publish is forced to false for "system" and "system:…".
//
// org: channels that no configured namespace covers get the built-in room
// defaults: OrgHistorySize publications for OrgHistoryTTL, and presence.
func (p *Policy) Namespace(channel string) Resolved {
	r := Resolved{Publish: true, AllowHistory: true}
	if p != nil {
		r = p.def
		for _, n := range p.namespaces {
			if hasSegmentPrefix(channel, n.Prefix) {
				r = n
				break
			}
		}
	}
	switch kind, _ := tenantOf(channel); kind {
	case tenantSystem:
		r.Publish = false
	case tenantOrg:
		if r.Prefix == "" {
			r.HistorySize, r.HistoryTTL, r.Presence = OrgHistorySize, OrgHistoryTTL, true
		}
	}
	return r
}

// hasSegmentPrefix reports whether channel equals prefix or starts with
// prefix+":".
func hasSegmentPrefix(channel, prefix string) bool {
	return strings.HasPrefix(channel, prefix) &&
		(len(channel) == len(prefix) || channel[len(prefix)] == ':')
}

// Authorize reports whether id may do op on channel, a client action over
// WebSocket. It returns nil when allowed, otherwise a *protocol.Error with
// CodeInvalidChannel (bad name) or CodeForbidden. The rules, all of which
// must pass:
//
//   - channel must be a valid name (protocol.ValidChannel);
//   - "org:{orgId}" and "org:{orgId}:…" need id.OrgID == orgId exactly, and
//     "user:{userId}" and "user:{userId}:…" need id.UserID == userId exactly.
//     The id is the segment up to the next ':', so ids containing ':' have no
//     such channels, and "org", "org:" and "org::x" are forbidden to all;
//   - clients never publish to "system" or "system:…"; anyone may subscribe,
//     read history or presence there;
//   - the reserved prefixes org, user and system are only valid in lowercase:
//     "ORG:42", "User:x" or "SYSTEM" are forbidden to everybody, so no
//     look-alike of a tenant or system channel can exist;
//   - when id.Channels is not nil, channel must match one entry: equal to
//     it, or starting with the part before a trailing '*'. An empty, non-nil
//     list (a token's "channels":[]) allows nothing: an issuer that lists
//     no channel means none, and must not grant every one;
//   - publishing needs the channel's namespace to allow it ([Policy.Namespace]).
//
// History and presence also need the namespace to allow them. Forbidden
// messages say which rule refused, never anything about other tenants.
func (p *Policy) Authorize(id Identity, op Op, channel string) error {
	if !protocol.ValidChannel(channel) {
		return protocol.NewError(protocol.CodeInvalidChannel, "invalid channel name")
	}
	if op < OpSubscribe || op > OpPresence {
		return forbidden("unknown operation")
	}
	switch kind, owner := tenantOf(channel); kind {
	case tenantMiscased:
		return forbidden("reserved channel prefixes org, user and system must be lowercase")
	case tenantOrg:
		if owner == "" {
			return forbidden("org channels are named org:{orgId}")
		}
		if id.OrgID != owner {
			return forbidden("org channels are restricted to members of the org")
		}
	case tenantUser:
		if owner == "" {
			return forbidden("user channels are named user:{userId}")
		}
		if id.UserID != owner {
			return forbidden("user channels are restricted to their user")
		}
	case tenantSystem:
		if op == OpPublish {
			return forbidden("system channels are published by the server only")
		}
	}
	if id.Channels != nil && !allowListed(id.Channels, channel) {
		return forbidden("channel not allowed by the token's channel list")
	}
	switch op {
	case OpPublish:
		if !p.Namespace(channel).Publish {
			return forbidden("publishing is disabled on this channel")
		}
	case OpHistory:
		if !p.Namespace(channel).AllowHistory {
			return forbidden("history is disabled on this channel")
		}
	case OpPresence:
		if !p.Namespace(channel).Presence {
			return forbidden("presence is disabled on this channel")
		}
	}
	return nil
}

func forbidden(msg string) error {
	return protocol.NewError(protocol.CodeForbidden, msg)
}

// allowListed reports whether channel matches an entry of list: exactly, or
// by prefix when the entry ends in '*'.
func allowListed(list []string, channel string) bool {
	for _, e := range list {
		if n := len(e); n > 0 && e[n-1] == '*' {
			if strings.HasPrefix(channel, e[:n-1]) {
				return true
			}
		} else if e == channel {
			return true
		}
	}
	return false
}

// tenant classifies a channel by its first ':'-separated segment.
type tenant int

const (
	tenantNone     tenant = iota // ordinary channel
	tenantOrg                    // org, org:{orgId}[:…]
	tenantUser                   // user, user:{userId}[:…]
	tenantSystem                 // system, system:…
	tenantMiscased               // a reserved prefix in non-lowercase spelling
)

// tenantOf returns the tenant kind of channel and, for org and user channels,
// the owner: the second segment ("" when missing or empty).
func tenantOf(channel string) (kind tenant, owner string) {
	first, rest, _ := strings.Cut(channel, ":")
	switch first {
	case prefixOrg:
		kind = tenantOrg
	case prefixUser:
		kind = tenantUser
	case prefixSystem:
		return tenantSystem, ""
	default:
		if isMiscasedReserved(first) {
			return tenantMiscased, ""
		}
		return tenantNone, ""
	}
	owner, _, _ = strings.Cut(rest, ":")
	return kind, owner
}

// isMiscasedReserved reports whether s, known not to be a lowercase reserved
// prefix, spells one in another case. The length switch keeps ordinary
// channels to a single comparison.
func isMiscasedReserved(s string) bool {
	switch len(s) {
	case len(prefixOrg):
		return strings.EqualFold(s, prefixOrg)
	case len(prefixUser):
		return strings.EqualFold(s, prefixUser)
	case len(prefixSystem):
		return strings.EqualFold(s, prefixSystem)
	}
	return false
}

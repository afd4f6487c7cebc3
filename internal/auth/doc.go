// Package auth establishes who a herald connection is and decides what it may
// do.
//
// Tokens: a [Verifier] checks a JWT (HS256, RS256 or ES256, exactly as
// configured) and turns it into an [Identity]. Every failure wraps one of the
// sentinel errors ([ErrMissingToken], [ErrMalformed], [ErrBadSignature],
// [ErrExpired], [ErrAlgorithm], [ErrClaims]); [Reason] maps it to a short,
// stable label for metrics and logs.
//
// Permissions: every channel permission check in herald goes through
// [Policy.Authorize]. The built-in tenant rules (org:{orgId}, user:{userId},
// system) always apply; a token's channel allow-list and the configured
// namespaces can only narrow them, never widen them.
//
// Everything in the package is immutable after construction and safe for
// concurrent use.
package auth

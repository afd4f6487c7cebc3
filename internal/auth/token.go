package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-rt/herald/internal/jsonscan"
)

// Identity is who a connection is, as established by a verified token (or, in
// insecure dev mode, query params).
type Identity struct {
	// UserID is the JWT "sub" claim; never empty for a verified token.
	UserID string
	// Role is the optional "role" claim.
	Role string
	// OrgID is the optional "org" claim.
	OrgID string
	// Channels is the optional "channels" allow-list: exact channel names, or
	// prefix patterns ending in "*" (e.g. "docs:*"). nil (no claim, or null)
	// means no restriction beyond the built-in rules; a non-nil empty list
	// (the claim [] ) allows no channel at all; see [Policy.Authorize].
	Channels []string
	// ExpiresAt is the "exp" claim; zero when there is no expiry (insecure
	// mode only — verified tokens always expire).
	ExpiresAt time.Time
}

// Errors returned by [Verifier.Verify] wrap exactly one of these; [Reason]
// turns them into metric labels. The wrapped detail is meant for server logs,
// not for clients.
var (
	// ErrMissingToken: no token was presented.
	ErrMissingToken = errors.New("auth: missing token")
	// ErrMalformed: the token is not a well-formed JWS compact JWT (segments,
	// base64, JSON, missing "alg" header, oversized).
	ErrMalformed = errors.New("auth: malformed token")
	// ErrBadSignature: the signature does not verify with the configured key.
	ErrBadSignature = errors.New("auth: bad token signature")
	// ErrExpired: "exp" is in the past (after leeway).
	ErrExpired = errors.New("auth: token expired")
	// ErrAlgorithm: the token's "alg" is not one the configured keys accept
	// (including "none" and algorithm-confusion attempts).
	ErrAlgorithm = errors.New("auth: token algorithm not accepted")
	// ErrClaims: a claim is missing or has the wrong type ("exp", "sub",
	// "role", "org", "channels"), or "nbf"/"iat" lie in the future.
	ErrClaims = errors.New("auth: invalid token claims")
)

// Reason returns a short, stable label for an error from [Verifier.Verify]:
// "missing", "malformed", "signature", "expired", "algorithm" or "claims".
// It returns "" for nil and "unknown" for any other error.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrMissingToken):
		return "missing"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrBadSignature):
		return "signature"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrAlgorithm):
		return "algorithm"
	case errors.Is(err, ErrClaims):
		return "claims"
	default:
		return "unknown"
	}
}

// maxTokenLen bounds the tokens Verify will parse, so an absurd query string
// cannot make the server decode megabytes of base64 and JSON.
const maxTokenLen = 16 << 10

// minRSABits is the smallest RSA public key NewVerifier accepts.
const minRSABits = 2048

// VerifierOptions configures [NewVerifier]. At least one of HMACSecret and
// PublicKeyPEM must be set; when both are, tokens signed either way are
// accepted, each only with its own algorithm.
type VerifierOptions struct {
	// HMACSecret enables HS256 when non-empty.
	HMACSecret []byte
	// PublicKeyPEM enables RS256 (RSA key, at least 2048 bits) or ES256
	// (ECDSA P-256 key) when non-empty. The first PEM block must be a
	// "PUBLIC KEY" (PKIX) or "RSA PUBLIC KEY" (PKCS #1) block.
	PublicKeyPEM []byte
	// Leeway is the clock-skew allowance applied to exp, nbf and iat. Default 0.
	Leeway time.Duration
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// Verifier checks tokens against the configured keys. Its configuration is
// immutable; it is safe for concurrent use.
type Verifier struct {
	hmacSecret []byte
	publicKey  any    // *rsa.PublicKey or *ecdsa.PublicKey, or nil
	publicAlg  string // "RS256" or "ES256" when publicKey != nil
	algs       []string
	validator  *jwt.Validator
	hmacs      sync.Pool // *hmacState keyed with hmacSecret
	lastHeader atomic.Pointer[headerMemo]
}

// NewVerifier returns a Verifier for o. It fails when no key is configured,
// when the PEM cannot be parsed or holds an unsupported key, or when Leeway is
// negative.
func NewVerifier(o VerifierOptions) (*Verifier, error) {
	if len(o.HMACSecret) == 0 && len(o.PublicKeyPEM) == 0 {
		return nil, errors.New("auth: no token key configured (need an hmac secret or a public key)")
	}
	if o.Leeway < 0 {
		return nil, errors.New("auth: negative token leeway")
	}
	v := &Verifier{}
	if len(o.HMACSecret) > 0 {
		v.hmacSecret = append([]byte(nil), o.HMACSecret...)
		v.algs = append(v.algs, jwt.SigningMethodHS256.Alg())
	}
	if len(o.PublicKeyPEM) > 0 {
		key, alg, err := parsePublicKey(o.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.publicKey, v.publicAlg = key, alg
		v.algs = append(v.algs, alg)
	}
	opts := []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(o.Leeway),
	}
	if o.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(o.Now))
	}
	v.validator = jwt.NewValidator(opts...)
	if v.hmacSecret != nil {
		secret := v.hmacSecret
		v.hmacs.New = func() any { return &hmacState{mac: hmac.New(sha256.New, secret)} }
	}
	return v, nil
}

// parsePublicKey decodes the first PEM block of data and returns the key with
// the single algorithm it may verify.
func parsePublicKey(data []byte) (any, string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("auth: public key: no pem block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, "", fmt.Errorf("auth: public key: pem block is %q, want \"PUBLIC KEY\" or \"RSA PUBLIC KEY\"", block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("auth: public key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, "", fmt.Errorf("auth: public key: rsa key has %d bits, need at least %d", k.N.BitLen(), minRSABits)
		}
		return k, jwt.SigningMethodRS256.Alg(), nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", fmt.Errorf("auth: public key: ecdsa curve %s not supported, need P-256 for ES256", k.Curve.Params().Name)
		}
		return k, jwt.SigningMethodES256.Alg(), nil
	default:
		return nil, "", fmt.Errorf("auth: public key: unsupported key type %T (need rsa or ecdsa p-256)", key)
	}
}

// accepts reports whether alg is one of the configured algorithms.
func (v *Verifier) accepts(alg string) bool {
	for _, a := range v.algs {
		if a == alg {
			return true
		}
	}
	return false
}

// Verify checks token and returns the identity it carries. The signature,
// algorithm, exp (required), nbf and iat are checked; sub must be a non-empty
// string; role and org must be strings and channels an array of strings when
// present (JSON null counts as absent). Errors wrap one of the ErrXxx
// sentinels of this package.
//
// Verify runs golang-jwt's steps in golang-jwt's order (except that claim
// types are checked after the signature, as herald did before), with
// golang-jwt's signing methods (for RS256 and ES256) and claims validator,
// but not its Parser, which decodes every token's header into a fresh map
// and keys a new HMAC for every signature (what that cost per connect:
// docs/performance.md). Here the last accepted header segment is
// remembered (one issuer's tokens all carry the same header), segments are
// decoded into stack buffers, and HS256 uses pooled keyed HMACs. Verify is
// safe for concurrent use.
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrMissingToken
	}
	if len(token) > maxTokenLen {
		return Identity{}, fmt.Errorf("%w: token longer than %d bytes", ErrMalformed, maxTokenLen)
	}
	h, rest, ok1 := strings.Cut(token, ".")
	c, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(s, '.') >= 0 {
		return Identity{}, fmt.Errorf("%w: token contains an invalid number of segments", ErrMalformed)
	}
	alg, err := v.headerAlg(h)
	if err != nil {
		return Identity{}, err
	}
	var cbuf [512]byte
	payload, err := decodeSegment(cbuf[:], c)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: could not base64 decode claims: %w", ErrMalformed, err)
	}
	if !json.Valid(payload) {
		return Identity{}, fmt.Errorf("%w: the claims are not JSON", ErrMalformed)
	}
	if i := jsonscan.SkipSpace(payload, 0); payload[i] != '{' {
		return Identity{}, fmt.Errorf("%w: the claims are not a JSON object", ErrMalformed)
	}
	if !v.accepts(alg) {
		return Identity{}, fmt.Errorf("%w: %q", ErrAlgorithm, alg)
	}
	var sbuf [512]byte
	sig, err := decodeSegment(sbuf[:], s)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: could not base64 decode signature: %w", ErrMalformed, err)
	}
	if err := v.verifySignature(alg, token[:len(h)+1+len(c)], sig); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	// The claims' types are checked only now, after the signature: a forged
	// token is reported as one whatever its claims hold.
	var cl claims
	if err := cl.UnmarshalJSON(payload); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrClaims, err)
	}
	if err := v.validator.Validate(&cl); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Identity{}, fmt.Errorf("%w: %w", ErrExpired, err)
		}
		// exp missing or of the wrong type, nbf/iat in the future.
		return Identity{}, fmt.Errorf("%w: %w", ErrClaims, err)
	}
	return identityFromClaims(&cl)
}

// headerMemo is a header segment Verify accepted, and its algorithm.
type headerMemo struct{ seg, alg string }

// headerAlg decodes header segment h as golang-jwt does (base64url without
// padding, then JSON into a map) and returns its "alg". The last header
// whose algorithm is accepted is remembered, compared byte for byte.
func (v *Verifier) headerAlg(h string) (string, error) {
	if m := v.lastHeader.Load(); m != nil && m.seg == h {
		return m.alg, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return "", fmt.Errorf("%w: could not base64 decode header: %w", ErrMalformed, err)
	}
	var hdr map[string]any
	if err := json.Unmarshal(b, &hdr); err != nil {
		return "", fmt.Errorf("%w: could not JSON decode header: %w", ErrMalformed, err)
	}
	alg, _ := hdr["alg"].(string)
	if alg == "" {
		return "", fmt.Errorf("%w: missing alg header", ErrMalformed)
	}
	// RFC 7515 §4.1.11: a token whose crit names an extension the
	// verifier does not understand is invalid. herald understands none.
	if _, ok := hdr["crit"]; ok {
		return "", fmt.Errorf("%w: crit header names extensions this server does not understand", ErrMalformed)
	}
	if v.accepts(alg) {
		v.lastHeader.Store(&headerMemo{seg: strings.Clone(h), alg: alg})
	}
	return alg, nil
}

// decodeSegment base64url-decodes seg (no padding, as golang-jwt's Parser
// does by default) into buf when it fits.
func decodeSegment(buf []byte, seg string) ([]byte, error) {
	enc := base64.RawURLEncoding
	if n := enc.DecodedLen(len(seg)); n > len(buf) {
		buf = make([]byte, n)
	}
	n, err := enc.Decode(buf, readOnlyBytes(seg))
	return buf[:n], err
}

// readOnlyBytes views s as bytes without copying, for callees that only
// read their argument (a base64 decoder, a hash).
func readOnlyBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// hmacState is a keyed HS256 MAC with room for its sum.
type hmacState struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// verifySignature checks sig over signed with the key of alg, which
// v.accepts. Each key is used only with its own algorithm, so an HS256
// token is never checked against the public key (algorithm confusion).
func (v *Verifier) verifySignature(alg, signed string, sig []byte) error {
	switch {
	case alg == jwt.SigningMethodHS256.Alg() && v.hmacSecret != nil:
		st := v.hmacs.Get().(*hmacState)
		defer v.hmacs.Put(st)
		st.mac.Reset()
		st.mac.Write(readOnlyBytes(signed))
		if !hmac.Equal(st.mac.Sum(st.sum[:0]), sig) {
			return jwt.ErrSignatureInvalid
		}
		return nil
	case alg == v.publicAlg && v.publicKey != nil:
		// A copy: handing sig to an interface would move every caller's
		// stack buffer to the heap, and these algorithms are slow anyway.
		return jwt.GetSigningMethod(alg).Verify(signed, bytes.Clone(sig), v.publicKey)
	default:
		return fmt.Errorf("no key for algorithm %q", alg)
	}
}

// identityFromClaims checks the herald claims of an already verified token.
func identityFromClaims(c *claims) (Identity, error) {
	if c.Sub == "" {
		return Identity{}, fmt.Errorf("%w: missing sub", ErrClaims)
	}
	exp := c.Exp.date()
	if exp == nil {
		// Unreachable after validation with WithExpirationRequired.
		return Identity{}, fmt.Errorf("%w: missing exp", ErrClaims)
	}
	return Identity{
		UserID:    string(c.Sub),
		Role:      string(c.Role),
		OrgID:     string(c.Org),
		Channels:  c.Channels,
		ExpiresAt: exp.Time,
	}, nil
}

// Mint returns an HS256 token for id signed with secret, valid for ttl from
// now. See [MintWith].
func Mint(secret []byte, id Identity, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: mint: empty hmac secret")
	}
	return MintWith(jwt.SigningMethodHS256, secret, id, ttl)
}

// MintWith returns a token for id signed by method with key (e.g. an
// *rsa.PrivateKey for RS256, an *ecdsa.PrivateKey for ES256). It sets sub,
// iat, exp = now+ttl, role and org when non-empty, and channels when not
// nil (an empty list mints an empty allow-list);
// id.ExpiresAt is ignored. ttl must be positive; NumericDate has second
// precision, so ttl should be at least a second.
func MintWith(method jwt.SigningMethod, key any, id Identity, ttl time.Duration) (string, error) {
	if method == nil {
		return "", errors.New("auth: mint: nil signing method")
	}
	if id.UserID == "" {
		return "", errors.New("auth: mint: empty user id")
	}
	if ttl <= 0 {
		return "", errors.New("auth: mint: ttl must be positive")
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"sub": id.UserID,
		"iat": jwt.NewNumericDate(now),
		"exp": jwt.NewNumericDate(now.Add(ttl)),
	}
	if id.Role != "" {
		claims["role"] = id.Role
	}
	if id.OrgID != "" {
		claims["org"] = id.OrgID
	}
	if id.Channels != nil {
		claims["channels"] = id.Channels
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return s, nil
}

// TokenFromRequest returns the bearer token of r: the "Authorization: Bearer"
// header when present (scheme case-insensitive), else the "token" query
// parameter (browsers cannot set headers on a WebSocket upgrade). It returns
// "" when neither is set.
func TokenFromRequest(r *http.Request) string {
	var query func() url.Values
	if r.URL != nil {
		query = r.URL.Query
	}
	return TokenFrom(r.Header.Get("Authorization"), query)
}

// TokenFrom is TokenFromRequest for a request already taken apart: the
// Authorization header's value and the query, which is only parsed when
// the header has no bearer token (query may be nil).
func TokenFrom(authorization string, query func() url.Values) string {
	if scheme, tok, ok := strings.Cut(strings.TrimSpace(authorization), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if tok = strings.TrimSpace(tok); tok != "" {
			return tok
		}
	}
	if query == nil {
		return ""
	}
	return query().Get("token")
}

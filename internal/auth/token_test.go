package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var hmacSecret = []byte("test-secret-0123456789abcdef0123456789")

// testKeys holds keys generated once per test binary; RSA generation is slow.
type testKeys struct {
	rsa, rsa2     *rsa.PrivateKey
	ec, ec2       *ecdsa.PrivateKey
	ec384         *ecdsa.PrivateKey
	rsaPEM        []byte // PKIX "PUBLIC KEY"
	rsaPKCS1PEM   []byte // "RSA PUBLIC KEY"
	ecPEM         []byte
	ec384PEM      []byte
	rsa1024PEM    []byte
	ed25519PEM    []byte
	rsaPrivatePEM []byte
}

var keys = sync.OnceValue(func() *testKeys {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	k := &testKeys{}
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	must(err)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	must(err)

	pkix := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		must(err)
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	k.rsaPEM = pkix(&k.rsa.PublicKey)
	k.rsaPKCS1PEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})
	k.ecPEM = pkix(&k.ec.PublicKey)
	k.ec384PEM = pkix(&k.ec384.PublicKey)
	k.rsa1024PEM = pkix(&rsa1024.PublicKey)
	k.ed25519PEM = pkix(edPub)
	k.rsaPrivatePEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.rsa)})
	return k
})

func newVerifier(t *testing.T, o VerifierOptions) *Verifier {
	t.Helper()
	v, err := NewVerifier(o)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// sign signs claims with method and key, bypassing Mint's checks.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// raw builds a compact JWT from arbitrary header and claims JSON and a
// signature, for tokens no library would produce.
func raw(header, claims, sig string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(claims)) + "." + enc([]byte(sig))
}

// hs256Raw signs header.claims with the test HMAC secret.
func hs256Raw(t *testing.T, header, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc([]byte(header)) + "." + enc([]byte(claims))
	sig, err := jwt.SigningMethodHS256.Sign(signing, hmacSecret)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc(sig)
}

func TestNewVerifier(t *testing.T) {
	k := keys()
	tests := []struct {
		name     string
		opts     VerifierOptions
		wantErr  string // substring; "" means success
		wantAlgs []string
	}{
		{"nothing", VerifierOptions{}, "no token key", nil},
		{"empty slices", VerifierOptions{HMACSecret: []byte{}, PublicKeyPEM: []byte{}}, "no token key", nil},
		{"hmac", VerifierOptions{HMACSecret: hmacSecret}, "", []string{"HS256"}},
		{"rsa pkix", VerifierOptions{PublicKeyPEM: k.rsaPEM}, "", []string{"RS256"}},
		{"rsa pkcs1", VerifierOptions{PublicKeyPEM: k.rsaPKCS1PEM}, "", []string{"RS256"}},
		{"ecdsa p256", VerifierOptions{PublicKeyPEM: k.ecPEM}, "", []string{"ES256"}},
		{"hmac and rsa", VerifierOptions{HMACSecret: hmacSecret, PublicKeyPEM: k.rsaPEM}, "", []string{"HS256", "RS256"}},
		{"garbage pem", VerifierOptions{PublicKeyPEM: []byte("not a pem")}, "no pem block", nil},
		{"garbage pem with hmac", VerifierOptions{HMACSecret: hmacSecret, PublicKeyPEM: []byte("x")}, "no pem block", nil},
		{"corrupt der", VerifierOptions{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})}, "public key", nil},
		{"corrupt pkcs1", VerifierOptions{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte("junk")})}, "public key", nil},
		{"private key", VerifierOptions{PublicKeyPEM: k.rsaPrivatePEM}, "RSA PRIVATE KEY", nil},
		{"certificate type", VerifierOptions{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")})}, "CERTIFICATE", nil},
		{"p384", VerifierOptions{PublicKeyPEM: k.ec384PEM}, "P-384", nil},
		{"rsa 1024", VerifierOptions{PublicKeyPEM: k.rsa1024PEM}, "1024 bits", nil},
		{"ed25519", VerifierOptions{PublicKeyPEM: k.ed25519PEM}, "unsupported key type", nil},
		{"negative leeway", VerifierOptions{HMACSecret: hmacSecret, Leeway: -time.Second}, "leeway", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.opts)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("NewVerifier succeeded, want error containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("NewVerifier error %q, want it to contain %q", err, tt.wantErr)
				}
				if v != nil {
					t.Error("NewVerifier returned a verifier with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			if !slices.Equal(v.algs, tt.wantAlgs) {
				t.Errorf("algs = %v, want %v", v.algs, tt.wantAlgs)
			}
		})
	}
}

func TestNewVerifierCopiesSecret(t *testing.T) {
	secret := []byte("mutable-secret")
	v := newVerifier(t, VerifierOptions{HMACSecret: secret})
	tok, err := Mint([]byte("mutable-secret"), Identity{UserID: "a"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	secret[0] = 'X'
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("Verify after mutating the caller's secret: %v", err)
	}
}

func TestVerifyValid(t *testing.T) {
	k := keys()
	id := Identity{UserID: "alice@example.com", Role: "editor", OrgID: "42", Channels: []string{"chat", "docs:*"}}
	mint := func(method jwt.SigningMethod, key any) string {
		s, err := MintWith(method, key, id, time.Hour)
		if err != nil {
			t.Fatalf("MintWith(%s): %v", method.Alg(), err)
		}
		return s
	}
	hs, err := Mint(hmacSecret, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hsV := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	rsV := newVerifier(t, VerifierOptions{PublicKeyPEM: k.rsaPEM})
	rs1V := newVerifier(t, VerifierOptions{PublicKeyPEM: k.rsaPKCS1PEM})
	esV := newVerifier(t, VerifierOptions{PublicKeyPEM: k.ecPEM})
	bothV := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret, PublicKeyPEM: k.ecPEM})
	rs := mint(jwt.SigningMethodRS256, k.rsa)
	es := mint(jwt.SigningMethodES256, k.ec)

	tests := []struct {
		name  string
		v     *Verifier
		token string
	}{
		{"HS256", hsV, hs},
		{"RS256", rsV, rs},
		{"RS256 pkcs1 key", rs1V, rs},
		{"ES256", esV, es},
		{"both keys, HS256", bothV, hs},
		{"both keys, ES256", bothV, es},
	}
	before := time.Now()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.v.Verify(tt.token)
			if err != nil {
				t.Fatalf("Verify: %v (reason %q)", err, Reason(err))
			}
			if got.UserID != id.UserID || got.Role != id.Role || got.OrgID != id.OrgID || !slices.Equal(got.Channels, id.Channels) {
				t.Errorf("Verify = %+v, want %+v", got, id)
			}
			if d := got.ExpiresAt.Sub(before); d < time.Hour-2*time.Second || d > time.Hour+time.Second {
				t.Errorf("ExpiresAt %v is %v from now, want about 1h", got.ExpiresAt, d)
			}
		})
	}
}

func TestVerifyMinimalClaims(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	exp := time.Now().Add(time.Hour).Unix()
	for name, claims := range map[string]string{
		"sub and exp only":       fmt.Sprintf(`{"sub":"u1","exp":%d}`, exp),
		"nulls are absent":       fmt.Sprintf(`{"sub":"u1","exp":%d,"role":null,"org":null,"channels":null}`, exp),
		"empty strings":          fmt.Sprintf(`{"sub":"u1","exp":%d,"role":"","org":""}`, exp),
		"unknown claims ignored": fmt.Sprintf(`{"sub":"u1","exp":%d,"aud":"x","iss":"y","extra":{"a":1}}`, exp),
	} {
		t.Run(name, func(t *testing.T) {
			id, err := v.Verify(hs256Raw(t, `{"alg":"HS256","typ":"JWT"}`, claims))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := Identity{UserID: "u1", ExpiresAt: time.Unix(exp, 0)}
			if id.UserID != want.UserID || id.Role != "" || id.OrgID != "" || id.Channels != nil || !id.ExpiresAt.Equal(want.ExpiresAt) {
				t.Errorf("Verify = %+v, want %+v", id, want)
			}
		})
	}
}

// TestVerifyTypedClaimsDecoding covers the typed claims decoder's slow paths:
// escaped strings, fractional dates, and a wrong-typed claim in a token whose
// signature is also wrong (still reported as a bad signature).
func TestVerifyTypedClaimsDecoding(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	exp := time.Now().Add(time.Hour).Unix()
	raw := fmt.Sprintf(`{"sub":"u\"1\u00e9","exp":%d.5,"role":"a\/b","channels":["c\u0068at","docs:*"]}`, exp)
	id, err := v.Verify(hs256Raw(t, `{"alg":"HS256"}`, raw))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.UserID != "u\"1é" || id.Role != "a/b" || len(id.Channels) != 2 || id.Channels[0] != "chat" || id.Channels[1] != "docs:*" {
		t.Errorf("Verify = %+v", id)
	}
	if want := time.Unix(exp, 0); !id.ExpiresAt.Equal(want) { // jwt.TimePrecision: seconds
		t.Errorf("ExpiresAt = %v, want %v", id.ExpiresAt, want)
	}

	forged := hs256Raw(t, `{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"u1","exp":%d,"role":7}`, exp))
	forged = forged[:len(forged)-4] + "AAAA"
	if _, err := v.Verify(forged); !errors.Is(err, ErrBadSignature) {
		t.Errorf("forged token with a numeric role: %v, want ErrBadSignature", err)
	}
}

func TestVerifyErrors(t *testing.T) {
	k := keys()
	now := time.Now()
	exp := now.Add(time.Hour)
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "exp": exp.Unix(), "iat": now.Unix()}
	}
	with := func(kv ...any) jwt.MapClaims {
		c := base()
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	del := func(name string) jwt.MapClaims { c := base(); delete(c, name); return c }

	hsV := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	rsV := newVerifier(t, VerifierOptions{PublicKeyPEM: k.rsaPEM})
	esV := newVerifier(t, VerifierOptions{PublicKeyPEM: k.ecPEM})
	bothV := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret, PublicKeyPEM: k.rsaPEM})

	hsOK := sign(t, jwt.SigningMethodHS256, hmacSecret, base())
	parts := strings.Split(hsOK, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":`+fmt.Sprint(exp.Unix())+`}`)) + "." + parts[2]
	noneMint, err := MintWith(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, Identity{UserID: "alice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	claimsJSON, _ := json.Marshal(base())

	tests := []struct {
		name  string
		v     *Verifier
		token string
		want  error
	}{
		{"empty", hsV, "", ErrMissingToken},

		{"one segment", hsV, "abc", ErrMalformed},
		{"two segments", hsV, "abc.def", ErrMalformed},
		{"four segments", hsV, hsOK + ".x", ErrMalformed},
		{"garbage segments", hsV, "a.b.c", ErrMalformed},
		{"bad base64 header", hsV, "!!!." + parts[1] + "." + parts[2], ErrMalformed},
		{"header not json", hsV, raw("nope", string(claimsJSON), "x"), ErrMalformed},
		{"claims not json", hsV, raw(`{"alg":"HS256"}`, "nope", "x"), ErrMalformed},
		{"claims is an array", hsV, raw(`{"alg":"HS256"}`, "[1,2]", "x"), ErrMalformed},
		{"bad base64 signature", hsV, parts[0] + "." + parts[1] + ".***", ErrMalformed},
		{"missing alg", hsV, raw(`{"typ":"JWT"}`, string(claimsJSON), "x"), ErrMalformed},
		{"alg not a string", hsV, raw(`{"alg":256}`, string(claimsJSON), "x"), ErrMalformed},
		{"oversized", hsV, strings.Repeat("a", maxTokenLen+1), ErrMalformed},

		{"HS256 wrong secret", hsV, sign(t, jwt.SigningMethodHS256, []byte("other-secret"), base()), ErrBadSignature},
		{"HS256 tampered payload", hsV, tampered, ErrBadSignature},
		{"HS256 empty signature", hsV, parts[0] + "." + parts[1] + ".", ErrBadSignature},
		{"RS256 wrong key", rsV, sign(t, jwt.SigningMethodRS256, k.rsa2, base()), ErrBadSignature},
		{"ES256 wrong key", esV, sign(t, jwt.SigningMethodES256, k.ec2, base()), ErrBadSignature},
		{"ES256 garbage signature", esV, raw(`{"alg":"ES256"}`, string(claimsJSON), "short"), ErrBadSignature},
		{"both keys, RS256 wrong key", bothV, sign(t, jwt.SigningMethodRS256, k.rsa2, base()), ErrBadSignature},

		{"alg none via library", hsV, noneMint, ErrAlgorithm},
		{"alg none handmade", hsV, raw(`{"alg":"none"}`, string(claimsJSON), ""), ErrAlgorithm},
		{"alg None", hsV, raw(`{"alg":"None"}`, string(claimsJSON), ""), ErrAlgorithm},
		{"alg none to rsa", rsV, raw(`{"alg":"none"}`, string(claimsJSON), ""), ErrAlgorithm},
		{"unknown alg", hsV, raw(`{"alg":"XX256"}`, string(claimsJSON), "x"), ErrAlgorithm},
		{"HS384 with hmac key", hsV, sign(t, jwt.SigningMethodHS384, hmacSecret, base()), ErrAlgorithm},
		{"HS512 with hmac key", hsV, sign(t, jwt.SigningMethodHS512, hmacSecret, base()), ErrAlgorithm},
		{"RS256 to hmac-only", hsV, sign(t, jwt.SigningMethodRS256, k.rsa, base()), ErrAlgorithm},
		{"ES256 to rsa", rsV, sign(t, jwt.SigningMethodES256, k.ec, base()), ErrAlgorithm},
		{"RS256 to ecdsa", esV, sign(t, jwt.SigningMethodRS256, k.rsa, base()), ErrAlgorithm},
		{"PS256 with rsa key", rsV, sign(t, jwt.SigningMethodPS256, k.rsa, base()), ErrAlgorithm},
		{"RS512 with rsa key", rsV, sign(t, jwt.SigningMethodRS512, k.rsa, base()), ErrAlgorithm},
		{"ES384 to p256", esV, sign(t, jwt.SigningMethodES384, k.ec384, base()), ErrAlgorithm},
		// Algorithm confusion: an HS256 token keyed with the public key bytes.
		{"confusion: HS256 with rsa pem as secret", rsV, sign(t, jwt.SigningMethodHS256, k.rsaPEM, base()), ErrAlgorithm},
		{"confusion: HS256 with pkcs1 pem as secret", rsV, sign(t, jwt.SigningMethodHS256, k.rsaPKCS1PEM, base()), ErrAlgorithm},
		{"confusion: HS256 with ec pem as secret", esV, sign(t, jwt.SigningMethodHS256, k.ecPEM, base()), ErrAlgorithm},
		{"confusion with both keys: HS256 with rsa pem", bothV, sign(t, jwt.SigningMethodHS256, k.rsaPEM, base()), ErrBadSignature},

		{"expired", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("exp", now.Add(-time.Minute).Unix())), ErrExpired},
		{"expired now", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("exp", now.Add(-time.Second).Unix())), ErrExpired},
		{"expired RS256", rsV, sign(t, jwt.SigningMethodRS256, k.rsa, with("exp", now.Add(-time.Hour).Unix())), ErrExpired},
		{"expired and bad iat", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("exp", now.Add(-time.Hour).Unix(), "iat", now.Add(time.Hour).Unix())), ErrExpired},

		{"missing exp", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, del("exp")), ErrClaims},
		{"exp zero", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("exp", 0)), ErrClaims},
		{"exp string", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("exp", "tomorrow")), ErrClaims},
		{"exp bool", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("exp", true)), ErrClaims},
		{"nbf in future", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("nbf", now.Add(time.Minute).Unix())), ErrClaims},
		{"nbf string", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("nbf", "soon")), ErrClaims},
		{"iat in future", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("iat", now.Add(time.Minute).Unix())), ErrClaims},
		{"missing sub", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, del("sub")), ErrClaims},
		{"empty sub", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("sub", "")), ErrClaims},
		{"null sub", hsV, hs256Raw(t, `{"alg":"HS256"}`, fmt.Sprintf(`{"sub":null,"exp":%d}`, exp.Unix())), ErrClaims},
		{"sub number", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("sub", 42)), ErrClaims},
		{"role number", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("role", 1)), ErrClaims},
		{"role array", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("role", []string{"admin"})), ErrClaims},
		{"org bool", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("org", true)), ErrClaims},
		{"org number", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("org", 42)), ErrClaims},
		{"channels string", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("channels", "chat")), ErrClaims},
		{"channels numbers", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("channels", []int{1})), ErrClaims},
		{"channels mixed", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("channels", []any{"chat", 1})), ErrClaims},
		{"channels null entry", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("channels", []any{"chat", nil})), ErrClaims},
		{"channels object", hsV, sign(t, jwt.SigningMethodHS256, hmacSecret, with("channels", map[string]any{"chat": true})), ErrClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.v.Verify(tt.token)
			if err == nil {
				t.Fatalf("Verify succeeded with %+v, want %v", id, tt.want)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error %q (reason %q), want %v", err, Reason(err), tt.want)
			}
			for _, other := range []error{ErrMissingToken, ErrMalformed, ErrBadSignature, ErrExpired, ErrAlgorithm, ErrClaims} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("error %q also wraps %v", err, other)
				}
			}
			if id.UserID != "" || id.Channels != nil {
				t.Errorf("Verify returned identity %+v along with an error", id)
			}
			if msg := err.Error(); msg != strings.ToLower(msg[:1])+msg[1:] {
				t.Errorf("error %q does not start lowercase", msg)
			}
		})
	}
}

func TestVerifyTimeAndLeeway(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	tok := func(claims jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, hmacSecret, claims) }
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }

	strict := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret, Now: clock})
	lenient := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret, Now: clock, Leeway: 30 * time.Second})

	tests := []struct {
		name   string
		v      *Verifier
		claims jwt.MapClaims
		want   error // nil = valid
	}{
		{"valid at fake now", strict, jwt.MapClaims{"sub": "a", "exp": at(time.Minute)}, nil},
		{"exp equals now", strict, jwt.MapClaims{"sub": "a", "exp": at(0)}, ErrExpired},
		{"exp just passed", strict, jwt.MapClaims{"sub": "a", "exp": at(-10 * time.Second)}, ErrExpired},
		{"exp just passed, leeway", lenient, jwt.MapClaims{"sub": "a", "exp": at(-10 * time.Second)}, nil},
		{"exp long passed, leeway", lenient, jwt.MapClaims{"sub": "a", "exp": at(-time.Minute)}, ErrExpired},
		{"nbf soon", strict, jwt.MapClaims{"sub": "a", "exp": at(time.Hour), "nbf": at(10 * time.Second)}, ErrClaims},
		{"nbf soon, leeway", lenient, jwt.MapClaims{"sub": "a", "exp": at(time.Hour), "nbf": at(10 * time.Second)}, nil},
		{"nbf later, leeway", lenient, jwt.MapClaims{"sub": "a", "exp": at(time.Hour), "nbf": at(time.Minute)}, ErrClaims},
		{"nbf past", strict, jwt.MapClaims{"sub": "a", "exp": at(time.Hour), "nbf": at(-time.Minute)}, nil},
		{"iat soon", strict, jwt.MapClaims{"sub": "a", "exp": at(time.Hour), "iat": at(10 * time.Second)}, ErrClaims},
		{"iat soon, leeway", lenient, jwt.MapClaims{"sub": "a", "exp": at(time.Hour), "iat": at(10 * time.Second)}, nil},
		{"iat past", strict, jwt.MapClaims{"sub": "a", "exp": at(time.Hour), "iat": at(-time.Hour)}, nil},
		{"real-time token is expired in 2030", strict, nil, ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := ""
			if tt.claims == nil {
				var err error
				if token, err = Mint(hmacSecret, Identity{UserID: "a"}, time.Hour); err != nil {
					t.Fatal(err)
				}
			} else {
				token = tok(tt.claims)
			}
			id, err := tt.v.Verify(token)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if want := time.Unix(tt.claims["exp"].(int64), 0); !id.ExpiresAt.Equal(want) {
					t.Errorf("ExpiresAt = %v, want %v", id.ExpiresAt, want)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrMissingToken, "missing"},
		{ErrMalformed, "malformed"},
		{ErrBadSignature, "signature"},
		{ErrExpired, "expired"},
		{ErrAlgorithm, "algorithm"},
		{ErrClaims, "claims"},
		{fmt.Errorf("%w: %w", ErrExpired, jwt.ErrTokenExpired), "expired"},
		{fmt.Errorf("outer: %w", fmt.Errorf("%w: detail", ErrClaims)), "claims"},
		{jwt.ErrTokenExpired, "unknown"},
		{errors.New("boom"), "unknown"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestReasonFromVerify checks the labels end to end.
func TestReasonFromVerify(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	expired := sign(t, jwt.SigningMethodHS256, hmacSecret, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(-time.Hour).Unix()})
	tests := map[string]string{
		"":      "missing",
		"x.y":   "malformed",
		expired: "expired",
		sign(t, jwt.SigningMethodHS256, []byte("wrong"), jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()}): "signature",
		sign(t, jwt.SigningMethodHS512, hmacSecret, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()}):      "algorithm",
		sign(t, jwt.SigningMethodHS256, hmacSecret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}):                  "claims",
	}
	for token, want := range tests {
		_, err := v.Verify(token)
		if got := Reason(err); got != want {
			t.Errorf("Reason(Verify(%.20q)) = %q (%v), want %q", token, got, err, want)
		}
	}
}

func TestMint(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})

	t.Run("round trip omits empty claims", func(t *testing.T) {
		tok, err := Mint(hmacSecret, Identity{UserID: "u", ExpiresAt: time.Unix(1, 0)}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(tok, claims); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"role", "org", "channels"} {
			if _, ok := claims[name]; ok {
				t.Errorf("claim %q present for empty value", name)
			}
		}
		for _, name := range []string{"sub", "iat", "exp"} {
			if _, ok := claims[name]; !ok {
				t.Errorf("claim %q missing", name)
			}
		}
		id, err := v.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		if id.ExpiresAt.Before(time.Now()) {
			t.Errorf("ExpiresAt %v ignores ttl", id.ExpiresAt)
		}
	})

	errs := []struct {
		name   string
		secret []byte
		id     Identity
		ttl    time.Duration
	}{
		{"empty secret", nil, Identity{UserID: "u"}, time.Minute},
		{"empty user", hmacSecret, Identity{Role: "admin"}, time.Minute},
		{"zero ttl", hmacSecret, Identity{UserID: "u"}, 0},
		{"negative ttl", hmacSecret, Identity{UserID: "u"}, -time.Minute},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := Mint(tt.secret, tt.id, tt.ttl); err == nil {
				t.Errorf("Mint succeeded: %s", tok)
			}
		})
	}

	t.Run("MintWith errors", func(t *testing.T) {
		if _, err := MintWith(nil, hmacSecret, Identity{UserID: "u"}, time.Minute); err == nil {
			t.Error("nil method accepted")
		}
		if _, err := MintWith(jwt.SigningMethodRS256, hmacSecret, Identity{UserID: "u"}, time.Minute); err == nil {
			t.Error("RS256 with an hmac key accepted")
		}
		if _, err := MintWith(jwt.SigningMethodNone, nil, Identity{UserID: "u"}, time.Minute); err == nil {
			t.Error("none without the unsafe marker accepted")
		}
	})
}

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		header string
		want   string
	}{
		{"none", "/ws", "", ""},
		{"query", "/ws?token=q1", "", "q1"},
		{"bearer", "/ws", "Bearer h1", "h1"},
		{"bearer wins over query", "/ws?token=q1", "Bearer h1", "h1"},
		{"scheme case-insensitive", "/ws", "bearer h1", "h1"},
		{"scheme upper", "/ws", "BEARER h1", "h1"},
		{"extra spaces", "/ws", "  Bearer   h1  ", "h1"},
		{"basic falls back to query", "/ws?token=q1", "Basic dXNlcjpwdw==", "q1"},
		{"basic without query", "/ws", "Basic dXNlcjpwdw==", ""},
		{"bearer without token", "/ws?token=q1", "Bearer", "q1"},
		{"bearer with blank token", "/ws?token=q1", "Bearer    ", "q1"},
		{"bearerx is not bearer", "/ws", "Bearerx h1", ""},
		{"query escaped", "/ws?token=a%2Bb", "", "a+b"},
		{"query other params", "/ws?userId=x&token=q1&org=2", "", "q1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.url, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if got := TokenFromRequest(r); got != tt.want {
				t.Errorf("TokenFromRequest = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSentinelMessages(t *testing.T) {
	for _, err := range []error{ErrMissingToken, ErrMalformed, ErrBadSignature, ErrExpired, ErrAlgorithm, ErrClaims} {
		if msg := err.Error(); msg != strings.ToLower(msg) || strings.HasSuffix(msg, ".") {
			t.Errorf("sentinel message %q should be lowercase without a trailing period", msg)
		}
	}
}

func BenchmarkVerifyHS256(b *testing.B) {
	v, err := NewVerifier(VerifierOptions{HMACSecret: hmacSecret})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := Mint(hmacSecret, Identity{UserID: "alice", OrgID: "42", Channels: []string{"chat", "docs:*"}}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVerifyRemembersOnlyAcceptedHeaders: Verify remembers the last header
// segment it accepted, compared byte for byte. A header that differs — one
// byte of a different alg, extra fields, the same JSON spelled otherwise —
// is decoded and judged on its own, and a remembered header does not vouch
// for the signature or claims of the token that carries it.
func TestVerifyRemembersOnlyAcceptedHeaders(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	exp := time.Now().Add(time.Hour).Unix()
	claimsJSON := fmt.Sprintf(`{"sub":"u1","exp":%d}`, exp)
	good := hs256Raw(t, `{"alg":"HS256","typ":"JWT"}`, claimsJSON)
	for i, c := range []struct {
		token string
		want  error
	}{
		{good, nil},
		{good, nil}, // from the memo
		{raw(`{"alg":"none","typ":"JWT"}`, claimsJSON, ""), ErrAlgorithm},
		{raw(`{"alg":"HS384","typ":"JWT"}`, claimsJSON, "x"), ErrAlgorithm},
		{raw(`{"alg":"HS256","typ":"JWT"}`, claimsJSON, "AAAA"), ErrBadSignature},
		{strings.Replace(good, ".", "x.", 1), ErrMalformed}, // header segment no longer base64 of JSON
		{hs256Raw(t, `{"alg":"HS256","typ":"JWT"}`, `{"sub":"u1","exp":1}`), ErrExpired},
		{hs256Raw(t, `{ "alg" : "HS256" }`, claimsJSON), nil},
		{hs256Raw(t, `{"alg":"HS256","alg":"RS256"}`, claimsJSON), ErrAlgorithm}, // the last alg counts
		{good, nil},
		{raw(`{"typ":"JWT"}`, claimsJSON, "x"), ErrMalformed},
	} {
		_, err := v.Verify(c.token)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("token %d: Verify = %v, want %v", i, err, c.want)
		}
	}
}

// TestVerifyConcurrent: tokens with different headers verified at once
// (the memo changes under the readers; run with -race).
func TestVerifyConcurrent(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	exp := time.Now().Add(time.Hour).Unix()
	tokens := []string{
		hs256Raw(t, `{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"a","exp":%d}`, exp)),
		hs256Raw(t, `{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf(`{"sub":"b","exp":%d}`, exp)),
		hs256Raw(t, `{"alg":"HS256","kid":"k2"}`, fmt.Sprintf(`{"sub":"c","exp":%d}`, exp)),
	}
	forged := raw(`{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"a","exp":%d}`, exp), "AAAA")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				tok := tokens[(g+i)%len(tokens)]
				id, err := v.Verify(tok)
				if err != nil || id.UserID != string(rune('a'+(g+i)%len(tokens))) {
					errs <- fmt.Errorf("Verify = %+v, %v", id, err)
					return
				}
				if _, err := v.Verify(forged); !errors.Is(err, ErrBadSignature) {
					errs <- fmt.Errorf("forged: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestVerifyEmptyChannelsClaim: "channels":[] is an allow-list with nothing
// on it, not an absent claim; Mint writes an empty list back as [].
func TestVerifyEmptyChannelsClaim(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	exp := time.Now().Add(time.Hour).Unix()
	id, err := v.Verify(hs256Raw(t, `{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf(`{"sub":"u1","exp":%d,"channels":[]}`, exp)))
	if err != nil {
		t.Fatal(err)
	}
	if id.Channels == nil || len(id.Channels) != 0 {
		t.Fatalf("channels [] gave %#v, want an empty non-nil list", id.Channels)
	}
	tok, err := Mint(hmacSecret, Identity{UserID: "u1", Channels: []string{}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if id, err = v.Verify(tok); err != nil || id.Channels == nil || len(id.Channels) != 0 {
		t.Fatalf("minted empty list verified as %#v, %v", id.Channels, err)
	}
}

// TestVerifyRefusesCrit: issue 24's seventh defect. RFC 7515 §4.1.11: a
// token whose "crit" header names extensions the verifier does not
// understand is invalid. herald understands none, so any "crit" (and a
// malformed one) is refused, though the signature is good; the same header
// without it is accepted.
func TestVerifyRefusesCrit(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	claims := fmt.Sprintf(`{"sub":"alice","exp":%d}`, time.Now().Add(time.Hour).Unix())
	if _, err := v.Verify(hs256Raw(t, `{"alg":"HS256","typ":"JWT"}`, claims)); err != nil {
		t.Fatalf("without crit: %v", err)
	}
	for _, h := range []string{
		`{"alg":"HS256","typ":"JWT","crit":["exp"],"exp":1}`,
		`{"alg":"HS256","crit":["b64"],"b64":false}`,
		`{"alg":"HS256","crit":["http://example.com/ext"]}`,
		`{"alg":"HS256","crit":[]}`,
		`{"alg":"HS256","crit":"b64"}`,
	} {
		_, err := v.Verify(hs256Raw(t, h, claims))
		if !errors.Is(err, ErrMalformed) || Reason(err) != "malformed" {
			t.Errorf("header %s: %v, want refused as malformed", h, err)
		}
	}
}

// TestVerifyExpPastInt64IsClaims: an exp beyond what seconds in an int64
// hold (~9.2e18) wrapped to a date in the past and was refused as
// "expired"; it is a claim no date can be, refused as "claims".
func TestVerifyExpPastInt64IsClaims(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	for _, exp := range []string{"9.3e18", "9223372036854775808", "1e300", "-9.3e18"} {
		_, err := v.Verify(hs256Raw(t, `{"alg":"HS256","typ":"JWT"}`, `{"sub":"alice","exp":`+exp+`}`))
		if Reason(err) != "claims" {
			t.Errorf("exp %s: %v (reason %q), want claims", exp, err, Reason(err))
		}
	}
}

package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestClaimNamesMatchExactly: claim names are case-sensitive (RFC 7519 §4).
// An issuer's own "Role" or "ROLE" claim must not become herald's role, as
// encoding/json's case-insensitive struct decoding would have made it.
func TestClaimNamesMatchExactly(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	exp := time.Now().Add(time.Hour).Unix()
	id, err := v.Verify(hs256Raw(t, `{"alg":"HS256"}`, fmt.Sprintf(
		`{"sub":"u1","exp":%d,"ROLE":"admin","Role":"admin","ORG":"7","Channels":["*"],"Sub":"root","EXP":1}`, exp)))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.UserID != "u1" || id.Role != "" || id.OrgID != "" || id.Channels != nil || !id.ExpiresAt.Equal(time.Unix(exp, 0)) {
		t.Fatalf("Verify = %+v: a claim name in other case was taken", id)
	}
	// Without the exact name the claim is missing.
	if _, err := v.Verify(hs256Raw(t, `{"alg":"HS256"}`, fmt.Sprintf(`{"Sub":"u1","exp":%d}`, exp))); !errors.Is(err, ErrClaims) {
		t.Fatalf("only Sub: %v, want ErrClaims (missing sub)", err)
	}
}

// TestClaimsLastValueCounts: of a claim given twice the last one counts, as
// with jwt.MapClaims, including a last null (absent) and an earlier value of
// the wrong type.
func TestClaimsLastValueCounts(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	exp := time.Now().Add(time.Hour).Unix()
	id, err := v.Verify(hs256Raw(t, `{"alg":"HS256"}`, fmt.Sprintf(
		`{"sub":7,"sub":"u1","exp":"x","exp":%d,"role":"admin","role":null,"org":"1","org":"2","channels":["a"],"channels":null}`, exp)))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.UserID != "u1" || id.Role != "" || id.OrgID != "2" || id.Channels != nil {
		t.Fatalf("Verify = %+v", id)
	}
	if _, err := v.Verify(hs256Raw(t, `{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"u1","exp":%d,"role":"a","role":1}`, exp))); !errors.Is(err, ErrClaims) {
		t.Fatalf("last role a number: %v, want ErrClaims", err)
	}
}

// TestUnreadClaimsAreIgnored: a claim herald does not read is ignored (RFC 7519
// §4), even a number beyond float64 that jwt.MapClaims would refuse; herald's
// own time claims still must be numbers it can hold: beyond float64 the
// claim is invalid (ErrClaims; the token itself is well-formed JSON).
func TestUnreadClaimsAreIgnored(t *testing.T) {
	v := newVerifier(t, VerifierOptions{HMACSecret: hmacSecret})
	exp := time.Now().Add(time.Hour).Unix()
	id, err := v.Verify(hs256Raw(t, `{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"u1","exp":%d,"":10e700,"x":[-1e999]}`, exp)))
	if err != nil || id.UserID != "u1" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	if _, err := v.Verify(hs256Raw(t, `{"alg":"HS256"}`, `{"sub":"u1","exp":1e400}`)); !errors.Is(err, ErrClaims) {
		t.Fatalf("exp 1e400: %v, want ErrClaims", err)
	}
}

// referenceClaims decodes b the way jwt.MapClaims and herald's rules read it:
// a map with the last value of each name, then each known claim checked.
// Unlike MapClaims it keeps numbers as written (UseNumber): a claim herald does
// not read, or one given again later, is ignored (RFC 7519 §4) even when its
// number is beyond float64, where MapClaims would refuse the whole token.
func referenceClaims(b []byte) (claims, bool) {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&m); err != nil || m == nil {
		return claims{}, false
	}
	var c claims
	for name, dst := range map[string]*claimString{"sub": &c.Sub, "role": &c.Role, "org": &c.Org} {
		switch x := m[name].(type) {
		case nil:
		case string:
			*dst = claimString(x)
		default:
			return claims{}, false
		}
	}
	switch x := m["channels"].(type) {
	case nil:
	case []any:
		c.Channels = make(claimStrings, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return claims{}, false
			}
			c.Channels = append(c.Channels, s)
		}
	default:
		return claims{}, false
	}
	for name, dst := range map[string]*claimTime{"exp": &c.Exp, "nbf": &c.Nbf, "iat": &c.Iat} {
		x, present := m[name]
		if !present {
			continue
		}
		n, ok := x.(json.Number)
		if !ok {
			return claims{}, false
		}
		f, err := n.Float64()
		if err != nil || math.Abs(f) > 1e18 { // past any date a time.Time holds: refused as claims
			return claims{}, false
		}
		if f != 0 {
			sec, frac := math.Modf(f)
			dst.set = true
			dst.d = *jwt.NewNumericDate(time.Unix(int64(sec), int64(frac*1e9)))
		}
	}
	return c, true
}

// FuzzClaims checks the claims decoder against referenceClaims on any valid
// JSON: the same claims, or an error exactly when the reference refuses.
func FuzzClaims(f *testing.F) {
	for _, s := range []string{
		`{"sub":"u1","exp":1700000000}`,
		`{"sub":"u\"1\u00e9","exp":1.5,"role":"a\/b","channels":["c\u0068at","docs:*"]}`,
		`{"sub":"a","sub":7}`, `{"sub":7,"sub":"a"}`, `{"role":null}`, `{"ROLE":"x","Sub":"y"}`,
		`{"channels":[]}`, `{"channels":["a",1]}`, `{"channels":[null]}`, `{"channels":"a"}`,
		`{"exp":null}`, `{"exp":0}`, `{"exp":-1e3}`, `{"nbf":"soon"}`, `{"iat":true}`,
		` { "extra" : { "a" : [ 1 , "}" , { "b" : "]" } ] } , "sub" : "z" } `,
		`{"s\u0075b":"escaped name"}`, `[]`, `"x"`, `null`, `12`, `{}`,
		`{"sub"`, `{"sub":`, `{"channels":["a"`, `{,`, `[`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// Any input, valid or not, gets an answer and no panic.
		var loose claims
		_ = loose.UnmarshalJSON(b)
		_ = loose.Channels.UnmarshalJSON(b)
		if !json.Valid(b) {
			return
		}
		var got claims
		err := json.Unmarshal(b, &got)
		want, ok := referenceClaims(b)
		if ok != (err == nil) {
			t.Fatalf("%s: decoder error %v, reference ok %v", b, err, ok)
		}
		if err != nil {
			if !errors.Is(err, errClaimType) {
				t.Fatalf("%s: error %v is not a claim type error", b, err)
			}
			return
		}
		if got.Sub != want.Sub || got.Role != want.Role || got.Org != want.Org || !slices.Equal(got.Channels, want.Channels) {
			t.Fatalf("%s: got %+v, want %+v", b, got, want)
		}
		for _, p := range [][2]*claimTime{{&got.Exp, &want.Exp}, {&got.Nbf, &want.Nbf}, {&got.Iat, &want.Iat}} {
			if p[0].set != p[1].set || !p[0].d.Time.Equal(p[1].d.Time) {
				t.Fatalf("%s: time claim %+v, want %+v", b, *p[0], *p[1])
			}
		}
	})
}

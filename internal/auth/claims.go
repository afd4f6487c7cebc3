package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-rt/herald/internal/jsonscan"
)

// errClaimType marks a claim of the wrong JSON type (or a number that does
// not fit); Verify reports it as ErrClaims, like a claim that fails
// validation.
var errClaimType = errors.New("claim of the wrong type")

// claims is the typed payload of a herald token. Its own decoder (a connect
// storm verifies one token per connection) keeps jwt.MapClaims' rules: claim
// names match exactly (RFC 7519 §4: "ROLE" is not "role", though
// encoding/json's struct decoding would take it); unknown claims are ignored;
// of a claim given twice the last counts; sub, role and org must be strings
// and channels an array of strings, with null counting as absent; exp, nbf
// and iat must be numbers, with 0 counting as absent and null as the wrong
// type.
type claims struct {
	Sub      claimString
	Role     claimString
	Org      claimString
	Channels claimStrings
	Exp      claimTime
	Nbf      claimTime
	Iat      claimTime
}

// UnmarshalJSON decodes a claims object. It is called only with a complete,
// valid JSON value (Verify checks with json.Valid first, as encoding/json
// does before it calls an Unmarshaler), which is what lets the scanning
// below stay simple: every string is terminated and every bracket matched.
func (c *claims) UnmarshalJSON(b []byte) error {
	i := jsonscan.SkipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return fmt.Errorf("%w: the claims are not a JSON object", errClaimType)
	}
	// The last value of each known claim, decoded once the object is read:
	// an earlier duplicate of the wrong type does not count.
	var sub, role, org, channels, exp, nbf, iat []byte
	for i++; ; {
		if i = jsonscan.SkipSpace(b, i); i < len(b) && b[i] == ',' {
			i = jsonscan.SkipSpace(b, i+1)
		}
		if i >= len(b) {
			return errUnterminated // not from encoding/json, which validates first
		}
		if b[i] == '}' {
			break
		}
		end := jsonscan.StringEnd(b, i)
		name, err := jsonString(b[i:end])
		if err != nil {
			return err
		}
		if i = jsonscan.SkipSpace(b, jsonscan.SkipSpace(b, end)+1); i >= len(b) { // past the colon
			return errUnterminated
		}
		end = jsonscan.ValueEnd(b, i)
		switch v := b[i:end]; name {
		case "sub":
			sub = v
		case "role":
			role = v
		case "org":
			org = v
		case "channels":
			channels = v
		case "exp":
			exp = v
		case "nbf":
			nbf = v
		case "iat":
			iat = v
		}
		i = end
	}
	// Concrete calls, not a loop over json.Unmarshalers: through an
	// interface b would escape, and Verify decodes it in a stack buffer.
	var err error
	if sub != nil {
		err = c.Sub.UnmarshalJSON(sub)
	}
	if err == nil && role != nil {
		err = c.Role.UnmarshalJSON(role)
	}
	if err == nil && org != nil {
		err = c.Org.UnmarshalJSON(org)
	}
	if err == nil && channels != nil {
		err = c.Channels.UnmarshalJSON(channels)
	}
	if err == nil && exp != nil {
		err = c.Exp.UnmarshalJSON(exp)
	}
	if err == nil && nbf != nil {
		err = c.Nbf.UnmarshalJSON(nbf)
	}
	if err == nil && iat != nil {
		err = c.Iat.UnmarshalJSON(iat)
	}
	return err
}

// errUnterminated reports input that ends inside the claims object.
var errUnterminated = fmt.Errorf("%w: the claims object is cut short", errClaimType)

var _ jwt.Claims = (*claims)(nil)

func (c *claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.Exp.date(), nil }
func (c *claims) GetNotBefore() (*jwt.NumericDate, error)      { return c.Nbf.date(), nil }
func (c *claims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.Iat.date(), nil }
func (c *claims) GetSubject() (string, error)                  { return string(c.Sub), nil }

// herald neither issues nor checks iss and aud.
func (c *claims) GetIssuer() (string, error)             { return "", nil }
func (c *claims) GetAudience() (jwt.ClaimStrings, error) { return nil, nil }

var jsonNull = []byte("null")

// claimString is a string claim; null makes it absent (empty).
type claimString string

func (s *claimString) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, jsonNull) {
		*s = ""
		return nil
	}
	if len(b) == 0 || b[0] != '"' {
		return fmt.Errorf("%w: want a string", errClaimType)
	}
	v, err := jsonString(b)
	*s = claimString(v)
	return err
}

// jsonString decodes b, a JSON string the decoder has already validated:
// directly when it has no escapes and is valid UTF-8, else with
// encoding/json (which turns invalid UTF-8 into U+FFFD).
func jsonString(b []byte) (string, error) {
	if v, ok := jsonscan.Plain(b); ok {
		return string(v), nil
	}
	var v string
	err := json.Unmarshal(bytes.Clone(b), &v) // a copy: json.Unmarshal would move Verify's buffer to the heap
	return v, err
}

// claimStrings is an array-of-strings claim; null leaves it nil, and []
// makes it empty but not nil.
type claimStrings []string

func (s *claimStrings) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, jsonNull) {
		*s = nil
		return nil
	}
	if len(b) == 0 || b[0] != '[' {
		return fmt.Errorf("%w: want an array of strings", errClaimType)
	}
	var out []string
	for i := jsonscan.SkipSpace(b, 1); ; {
		if i < len(b) && b[i] == ',' {
			i = jsonscan.SkipSpace(b, i+1)
		}
		if i < len(b) && b[i] == ']' {
			break
		}
		if i >= len(b) || b[i] != '"' {
			return fmt.Errorf("%w: want an array of strings", errClaimType)
		}
		end := jsonscan.StringEnd(b, i)
		str, err := jsonString(b[i:end])
		if err != nil {
			return err
		}
		out = append(out, str)
		i = jsonscan.SkipSpace(b, end)
	}
	if out == nil {
		out = []string{} // present but empty: no channel is allowed, unlike null
	}
	*s = out
	return nil
}

// maxClaimSeconds bounds a NumericDate claim's seconds either side of
// 1970: about 3e10 years, far inside what int64 seconds and time.Time's
// arithmetic hold (~9.2e18 s, less the offset time.Time adds).
const maxClaimSeconds = 1e18

// claimTime is a NumericDate claim: a JSON number of seconds.
type claimTime struct {
	set bool
	d   jwt.NumericDate
}

func (t *claimTime) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return fmt.Errorf("%w: want a number of seconds", errClaimType)
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("%w: %w", errClaimType, err)
	}
	*t = claimTime{}
	if f == 0 {
		return nil // MapClaims' rule: 0 is no date
	}
	// As jwt.NumericDate does: whole seconds plus the fraction. Seconds
	// past maxClaimSeconds are no date a time.Time can hold (converted,
	// they wrapped to the past: an "expired" token); they are a bad claim.
	sec, frac := math.Modf(f)
	if math.Abs(sec) > maxClaimSeconds {
		return fmt.Errorf("%w: %s seconds is past any date", errClaimType, b)
	}
	t.d, t.set = *jwt.NewNumericDate(time.Unix(int64(sec), int64(frac*1e9))), true
	return nil
}

func (t *claimTime) date() *jwt.NumericDate {
	if !t.set {
		return nil
	}
	return &t.d
}

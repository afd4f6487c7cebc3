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
)

// errClaimType marks a claim of the wrong JSON type. golang-jwt reports a
// claims decoding error as a malformed token; Verify looks for this error to
// report it as ErrClaims instead, like a claim that fails validation.
var errClaimType = errors.New("claim of the wrong type")

// claims is the typed payload of a herald token. Decoding into it costs about
// half of decoding into jwt.MapClaims (a connect storm verifies one token per
// connection), and it keeps MapClaims' rules: unknown claims are ignored;
// sub, role and org must be strings and channels an array of strings, with
// null counting as absent; exp, nbf and iat must be numbers, with 0 counting
// as absent and null as the wrong type.
type claims struct {
	Sub      claimString  `json:"sub"`
	Role     claimString  `json:"role"`
	Org      claimString  `json:"org"`
	Channels claimStrings `json:"channels"`
	Exp      claimTime    `json:"exp"`
	Nbf      claimTime    `json:"nbf"`
	Iat      claimTime    `json:"iat"`
}

var _ jwt.Claims = (*claims)(nil)

func (c *claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.Exp.date(), nil }
func (c *claims) GetNotBefore() (*jwt.NumericDate, error)      { return c.Nbf.date(), nil }
func (c *claims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.Iat.date(), nil }
func (c *claims) GetSubject() (string, error)                  { return string(c.Sub), nil }

// herald neither issues nor checks iss and aud.
func (c *claims) GetIssuer() (string, error)             { return "", nil }
func (c *claims) GetAudience() (jwt.ClaimStrings, error) { return nil, nil }

var jsonNull = []byte("null")

// claimString is a string claim; null leaves it empty.
type claimString string

func (s *claimString) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, jsonNull) {
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
// directly when it has no escapes, else with encoding/json.
func jsonString(b []byte) (string, error) {
	if len(b) >= 2 && bytes.IndexByte(b, '\\') < 0 {
		return string(b[1 : len(b)-1]), nil
	}
	var v string
	err := json.Unmarshal(b, &v)
	return v, err
}

// claimStrings is an array-of-strings claim; null leaves it nil.
type claimStrings []string

func (s *claimStrings) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, jsonNull) {
		return nil
	}
	if len(b) == 0 || b[0] != '[' {
		return fmt.Errorf("%w: want an array of strings", errClaimType)
	}
	var raw []any
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if len(raw) == 0 {
		*s = nil
		return nil
	}
	out := make([]string, len(raw))
	for i, e := range raw {
		str, ok := e.(string)
		if !ok {
			return fmt.Errorf("%w: want an array of strings", errClaimType)
		}
		out[i] = str
	}
	*s = out
	return nil
}

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
	// As jwt.NumericDate does: whole seconds plus the fraction.
	sec, frac := math.Modf(f)
	t.d, t.set = *jwt.NewNumericDate(time.Unix(int64(sec), int64(frac*1e9))), true
	return nil
}

func (t *claimTime) date() *jwt.NumericDate {
	if !t.set {
		return nil
	}
	return &t.d
}

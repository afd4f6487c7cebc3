package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/protocol"
)

func TestUpgradeAuthFailures(t *testing.T) {
	ts := start(t, nil)
	expired, _ := auth.MintWith(jwt.SigningMethodHS256, []byte(testSecret), auth.Identity{UserID: "a"}, time.Hour)
	// Build an expired token by hand: exp in the past.
	expired = signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "a", "exp": time.Now().Add(-time.Minute).Unix()})
	wrongSecret := signClaims(t, jwt.SigningMethodHS256, []byte("another-secret-entirely"), jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()})
	noExp := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "a"})
	noSub := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrongAlg := signClaims(t, jwt.SigningMethodES256, key, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()})
	none := signClaims(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()})
	cases := map[string]string{
		"none":          "",
		"garbage":       "token=not-a-jwt",
		"bad signature": "token=" + wrongSecret,
		"expired":       "token=" + expired,
		"no exp":        "token=" + noExp,
		"no sub":        "token=" + noSub,
		"wrong alg":     "token=" + url.QueryEscape(wrongAlg),
		"alg none":      "token=" + none,
		// Query identity is ignored unless --insecure-query-auth is on.
		"query identity": "userId=admin&role=owner",
	}
	for name, q := range cases {
		t.Run(name, func(t *testing.T) {
			status, body := ts.dialStatus(ts.wsURL(q), nil)
			if status != http.StatusUnauthorized || body["error"] != "unauthorized" {
				t.Fatalf("status %d body %v, want 401 unauthorized", status, body)
			}
		})
	}
	// Bearer header works too.
	h := http.Header{"Authorization": {"Bearer " + token(t, "bob", "")}}
	if c := ts.dialURL(ts.wsURL(""), h); c.Connected["userId"] != "bob" {
		t.Fatalf("connected = %v", c.Connected)
	}
	_, metrics := ts.api("GET", "/healthz", "", "")
	_ = metrics
	body := ts.metricsText()
	for _, want := range []string{`herald_auth_failures_total{reason="expired"}`, `herald_auth_failures_total{reason="signature"}`, `herald_auth_failures_total{reason="missing"}`} {
		if !containsLine(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func signClaims(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestES256PublicKey(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	path := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := start(t, func(c *config.Config) { c.JWTSecret = ""; c.JWTPublicKeyFile = path })
	tok, err := auth.MintWith(jwt.SigningMethodES256, key, auth.Identity{UserID: "eve", OrgID: "9"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c := ts.dialURL(ts.wsURL("token="+tok), nil)
	c.subscribe("org:9")
	// An HS256 token signed with the public key bytes (algorithm confusion) is refused.
	pemBytes, _ := os.ReadFile(path)
	confused := signClaims(t, jwt.SigningMethodHS256, pemBytes, jwt.MapClaims{"sub": "eve", "exp": time.Now().Add(time.Hour).Unix()})
	if status, _ := ts.dialStatus(ts.wsURL("token="+confused), nil); status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", status)
	}
}

func TestExpiredTokenClosesLiveConnection(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.PingInterval = 100 * time.Millisecond; c.PongTimeout = 5 * time.Second })
	tok, err := auth.Mint([]byte(testSecret), auth.Identity{UserID: "a"}, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c := ts.dialURL(ts.wsURL("token="+tok), nil)
	if code := c.expectClose(6 * time.Second); code != protocol.CloseUnauthorized {
		t.Fatalf("close code %d, want %d", code, protocol.CloseUnauthorized)
	}
}

func TestInsecureQueryAuth(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.InsecureQueryAuth = true })
	a := ts.dialURL(ts.wsURL("userId=u1&role=member&org=5"), nil)
	a.subscribe("org:5")
	a.subscribe("user:u1")
	// Tokens still take precedence over query identity.
	b := ts.dialURL(ts.wsURL("userId=mallory&token="+token(t, "bob", "")), nil)
	if b.Connected["userId"] != "bob" {
		t.Fatalf("connected = %v", b.Connected)
	}
	if status, _ := ts.dialStatus(ts.wsURL("role=member"), nil); status != http.StatusUnauthorized {
		t.Fatalf("no userId: status %d", status)
	}
}

func TestOriginCheck(t *testing.T) {
	ts := start(t, nil)
	tok := "token=" + token(t, "a", "")
	if status, body := ts.dialStatus(ts.wsURL(tok), http.Header{"Origin": {"http://evil.example"}}); status != http.StatusForbidden {
		t.Fatalf("foreign origin: %d %v", status, body)
	}
	ts.dialURL(ts.wsURL(tok), http.Header{"Origin": {"http://" + ts.addr}}) // same host
	ts.dialURL(ts.wsURL(tok), nil)                                          // no Origin: non-browser

	open := start(t, func(c *config.Config) { c.AllowedOrigins = []string{"https://app.example"} })
	open.dialURL(open.wsURL(tok), http.Header{"Origin": {"https://app.example"}})
	if status, _ := open.dialStatus(open.wsURL(tok), http.Header{"Origin": {"https://other.example"}}); status != http.StatusForbidden {
		t.Fatalf("status %d", status)
	}
	any := start(t, func(c *config.Config) { c.AllowedOrigins = []string{"*"} })
	any.dialURL(any.wsURL(tok), http.Header{"Origin": {"https://whatever.example"}})
}

// TestTenantIsolation: org A never receives org B's traffic, whatever it sends.
func TestTenantIsolation(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "A")
	b := ts.dial("bob", "B")
	b2 := ts.dial("bella", "B")
	a.subscribe("org:A")
	b.subscribe("org:B")
	b2.subscribe("org:B:alerts")
	for _, ch := range []string{"org:B", "org:B:alerts", "org:b", "org:", "org:BB", "org:AB", "org:A.B"} {
		a.send(map[string]any{"type": "subscribe", "channel": ch})
		m := a.expect("error")
		if m["code"] != "forbidden" && m["code"] != "invalid_channel" {
			t.Fatalf("subscribe %s: %v", ch, m)
		}
		a.send(map[string]any{"type": "message", "channel": ch, "data": "leak"})
		m = a.expect("error")
		if m["code"] != "forbidden" && m["code"] != "invalid_channel" {
			t.Fatalf("publish %s: %v", ch, m)
		}
	}
	// Server-side publishes to each org reach only that org.
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:B","data":"for B"}`)
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"org:A","data":"for A"}`)
	if m := b.expect("message"); m["data"] != "for B" {
		t.Fatalf("b got %v", m)
	}
	if m := a.expect("message"); m["data"] != "for A" {
		t.Fatalf("a got %v", m)
	}
	a.sync()
	b2.sync()
	// A client of org B publishing in its own room reaches its peers, not A.
	b.subscribe("org:B:alerts")
	b.send(map[string]any{"type": "message", "channel": "org:B:alerts", "data": "x"})
	if m := b2.expect("message"); m["from"] != "bob" {
		t.Fatalf("b2 got %v", m)
	}
	a.sync()
}

func TestUserChannels(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice@example.com", "")
	b := ts.dial("bob", "")
	a.subscribe("user:alice@example.com")
	b.send(map[string]any{"type": "subscribe", "channel": "user:alice@example.com"})
	b.expectError("forbidden")
	ts.api("POST", "/api/publish", testAPIKey, `{"channel":"user:alice@example.com","data":{"n":1}}`)
	a.expect("message")
	b.sync()
}

func TestSystemChannel(t *testing.T) {
	ts := start(t, nil)
	a := ts.dial("alice", "")
	a.subscribe("system")
	a.send(map[string]any{"type": "message", "channel": "system", "data": "fake"})
	a.expectError("forbidden")
	status, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"system","data":"maintenance at 5"}`)
	if status != 200 || body["delivered"] != float64(1) {
		t.Fatalf("publish: %d %v", status, body)
	}
	if m := a.expect("message"); m["data"] != "maintenance at 5" || m["from"] != nil {
		t.Fatalf("got %v (server publications carry no from)", m)
	}
}

func TestTokenChannelAllowList(t *testing.T) {
	ts := start(t, nil)
	tok, _ := auth.Mint([]byte(testSecret), auth.Identity{UserID: "a", Channels: []string{"chat", "docs:*"}}, time.Hour)
	a := ts.dialURL(ts.wsURL("token="+tok), nil)
	a.subscribe("chat")
	a.subscribe("docs:42")
	a.send(map[string]any{"type": "subscribe", "channel": "notifications"})
	a.expectError("forbidden")

	// "channels":[] lists no channel: it allows none, not all.
	none, _ := auth.Mint([]byte(testSecret), auth.Identity{UserID: "kiosk", Channels: []string{}}, time.Hour)
	k := ts.dialURL(ts.wsURL("token="+none), nil)
	for _, ch := range []string{"chat", "user:kiosk"} {
		k.send(map[string]any{"type": "subscribe", "channel": ch})
		k.expectError("forbidden")
	}
	k.send(map[string]any{"type": "message", "channel": "chat", "data": 1})
	k.expectError("forbidden")
}

// TestClaimNamesAreCaseSensitive: an issuer's own "ORG" or "Role" claim is
// not herald's org or role. A token carrying ORG=7 gets no org:7 channels,
// and its connected frame reports neither.
func TestClaimNamesAreCaseSensitive(t *testing.T) {
	ts := start(t, nil)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "mallory", "ORG": "7", "Org": "7", "ROLE": "admin", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := websocket.DefaultDialer.Dial(ts.wsURL("token="+tok), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	m := &wsClient{t: t, conn: conn}
	connected := m.expect("connected")
	if connected["org"] != nil || connected["role"] != nil {
		t.Fatalf("connected = %v: a claim in other case was taken", connected)
	}
	m.send(map[string]any{"type": "subscribe", "channel": "org:7:chat"})
	m.expectError("forbidden")
	// The real org claim still works.
	ts.dial("olivia", "7").subscribe("org:7:chat")
}

package server_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
)

// TestAuditDocsServerFullAfterTokenCheck: docs/protocol.md says the two
// connection limits refuse "an upgrade with a valid token, after the token is
// checked"; a full server answers 503 server_full to an upgrade without any
// token instead of 401.
func TestAuditDocsServerFullAfterTokenCheck(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxConnections = 1 })
	ts.dial("alice", "")
	status, body := ts.dialStatus(ts.wsURL("token=not-a-token"), nil)
	if status != http.StatusUnauthorized {
		t.Fatalf("upgrade with an invalid token at --max-connections: %d %v; docs/protocol.md: the limit applies after the token is checked, so want 401", status, body)
	}
}

// TestAuditDocsAPIBodyLargerThanMaxMessageBytes: docs/api.md's error table
// says 413 too_large for a "body or data larger than --max-message-bytes";
// a body larger than --max-message-bytes whose data is small is accepted.
func TestAuditDocsAPIBodyLargerThanMaxMessageBytes(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxMessageBytes = 1024 })
	body := fmt.Sprintf(`{"channel":"chat","data":1,"pad":%q}`, strings.Repeat("x", 4096))
	code, m := ts.api("POST", "/api/publish", testAPIKey, body)
	if code != http.StatusRequestEntityTooLarge || m["error"] != "too_large" {
		t.Fatalf("a %d-byte body with --max-message-bytes 1024: %d %v, want 413 too_large", len(body), code, m)
	}
}

// TestAuditDocsUpgradeHeadTimeout: README.md says the accept loop reads the
// head of a new connection with a 10 s limit (a connection "still sending
// its upgrade request" is held "for up to 10 s"); a connection that sent
// part of an upgrade head is held for 20 s (10 s in the accept loop, then
// net/http's own 10 s header timeout).
func TestAuditDocsUpgradeHeadTimeout(t *testing.T) {
	ts := start(t, nil)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /ws HTTP/1.1\r\nHost: " + ts.addr + "\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(13 * time.Second))
	_, err = io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a connection with an unfinished upgrade head is still open after %v; README.md: 10 s limit", time.Since(start).Round(time.Second))
	}
}

// TestAuditDocsStaleEpochReplaysHistory: docs/protocol.md ("Offsets and
// recovery") says that when recovered is false — "the epoch differs, the
// offset is ahead of the channel, or part of the gap has dropped out of
// history" — "whatever history still holds after since is replayed"; with a
// different epoch nothing is replayed although history holds publications
// after since's offset.
func TestAuditDocsStaleEpochReplaysHistory(t *testing.T) {
	ts := start(t, nil)
	for i := 1; i <= 3; i++ {
		if status, body := ts.api("POST", "/api/publish", testAPIKey, fmt.Sprintf(`{"channel":"org:42","data":%d}`, i)); status != http.StatusOK {
			t.Fatalf("publish %d: %d %v", i, status, body)
		}
	}
	a := ts.dial("alice", "42")
	a.send(map[string]any{"type": "subscribe", "channel": "org:42", "since": map[string]any{"offset": 1, "epoch": "stale"}})
	if ack := a.expect("subscribed"); ack["recovered"] != false {
		t.Fatalf("ack %v, want recovered:false", ack)
	}
	a.send(map[string]any{"type": "ping"})
	if m := a.read(); m["type"] != "message" {
		t.Fatalf("after the ack got %v; docs/protocol.md: history after since (offsets 2 and 3) is replayed", m)
	}
}

// TestAuditDocsSubscribeParamRateLimitedChannels: docs/protocol.md
// ("Subscribing in the upgrade request") says each named channel is handled
// exactly as a subscribe command, and "a channel that cannot be subscribed
// gets its error frame (with channel) in its place"; past the rate limit
// the first refused channel gets a rate_limited error without channel and
// the channels after it get no frame at all.
func TestAuditDocsSubscribeParamRateLimitedChannels(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.RateLimit, c.RateBurst = 1, 2 })
	q := "token=" + url.QueryEscape(token(t, "carol", "")) + "&subscribe=a,b,c,d"
	c := ts.dialURL(ts.wsURL(q), nil)
	c.expect("subscribed")
	c.expect("subscribed")
	if e := c.expectError("rate_limited"); e["channel"] != "c" {
		t.Errorf("error for the third channel %v, want it with \"channel\":\"c\"", e)
	}
	m, err := c.readWithin(time.Second)
	if err != nil {
		t.Fatalf("no frame in place of the fourth channel \"d\" (%v); docs/protocol.md: each channel gets its reply", err)
	}
	if m["channel"] != "d" {
		t.Fatalf("frame in place of the fourth channel: %v", m)
	}
}

package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/herald-rt/herald/internal/config"
)

// TestSubscribeInUpgradeRequest: channels named in the upgrade request's
// subscribe parameter (comma-separated, or the parameter repeated) are
// subscribed before the greeting is written: connected comes first, then a
// subscribed reply (without id) per channel in order, and publications to
// them arrive.
func TestSubscribeInUpgradeRequest(t *testing.T) {
	ts := start(t, nil)
	q := "token=" + url.QueryEscape(token(t, "alice", "42")) + "&subscribe=chat,org:42&subscribe=" + url.QueryEscape("user:alice")
	c := ts.dialURL(ts.wsURL(q), nil) // reads connected, which comes first
	if c.Connected["userId"] != "alice" {
		t.Fatalf("connected %v", c.Connected)
	}
	for _, ch := range []string{"chat", "org:42", "user:alice"} {
		m := c.expect("subscribed")
		if m["channel"] != ch {
			t.Fatalf("subscribed %v, want channel %q", m, ch)
		}
		if _, ok := m["id"]; ok {
			t.Fatalf("subscribed %v carries an id", m)
		}
		if _, ok := m["epoch"]; !ok {
			t.Fatalf("subscribed %v without position", m)
		}
	}
	for _, ch := range []string{"chat", "org:42"} {
		if code, body := ts.api("POST", "/api/publish", testAPIKey, `{"channel":"`+ch+`","data":{"n":1}}`); code != http.StatusOK {
			t.Fatalf("publish to %s: %d %v", ch, code, body)
		}
		if m := c.expect("message"); m["channel"] != ch {
			t.Fatalf("message %v, want channel %q", m, ch)
		}
	}
	// Unsubscribing works as for a channel subscribed by command.
	c.send(map[string]any{"type": "unsubscribe", "channel": "chat"})
	c.expect("unsubscribed")
}

// TestSubscribeInUpgradeRequestRefusals: a channel the identity may not
// subscribe to, or whose name is invalid, gets the error frame a subscribe
// command would, with the channel named; the others are subscribed and the
// connection stays.
func TestSubscribeInUpgradeRequestRefusals(t *testing.T) {
	ts := start(t, nil)
	q := "token=" + url.QueryEscape(token(t, "bob", "7")) + "&subscribe=org:8,chat,bad%20name,,org:7,news"
	c := ts.dialURL(ts.wsURL(q), nil) // reads connected
	if m := c.expectError("forbidden"); m["channel"] != "org:8" {
		t.Fatalf("error %v, want channel org:8", m)
	}
	if m := c.expect("subscribed"); m["channel"] != "chat" {
		t.Fatalf("subscribed %v", m)
	}
	if m := c.expectError("invalid_channel"); m["channel"] != "bad name" {
		t.Fatalf("error %v, want channel %q", m, "bad name")
	}
	c.expectError("channel_required")
	if m := c.expect("subscribed"); m["channel"] != "org:7" {
		t.Fatalf("subscribed %v", m)
	}
	if m := c.expect("subscribed"); m["channel"] != "news" {
		t.Fatalf("subscribed %v", m)
	}
	c.sync()
}

// TestSubscribeParamIsNotRateLimited: issue 24's third defect. With the
// default limits, 250 channels in the upgrade request were 200 subscribed,
// 49 rate_limited and a close with 4029 (and a reconnecting client looped
// forever). They count against --max-subscriptions only: all 250 are
// subscribed and the connection stays open.
func TestSubscribeParamIsNotRateLimited(t *testing.T) {
	ts := start(t, nil)
	names := make([]string, 250)
	for i := range names {
		names[i] = fmt.Sprint("ch", i)
	}
	q := "token=" + url.QueryEscape(token(t, "carol", "")) + "&subscribe=" + strings.Join(names, ",")
	c := ts.dialURL(ts.wsURL(q), nil)
	for _, ch := range names {
		if m := c.expect("subscribed"); m["channel"] != ch {
			t.Fatalf("got %v, want subscribed to %q", m, ch)
		}
	}
	c.sync()
}

// TestSubscribeInUpgradeRequestNetHTTP: the same on net/http's upgrade path
// (an upgrade on a keep-alive connection that carried another request).
func TestSubscribeInUpgradeRequestNetHTTP(t *testing.T) {
	ts := start(t, nil)
	c, br := rawSend(t, ts, []byte("GET /healthz HTTP/1.1\r\nHost: "+ts.addr+"\r\n\r\n"))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	if _, err := c.Write([]byte(upgradeRequest(ts, "token="+url.QueryEscape(token(t, "dave", ""))+"&subscribe=chat", ""))); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	if m := readJSON(t, br); m["type"] != "connected" {
		t.Fatalf("got %v", m)
	}
	if m := readJSON(t, br); m["type"] != "subscribed" || m["channel"] != "chat" {
		t.Fatalf("got %v", m)
	}
}

// TestSubscribeInUpgradeRequestTooMany: past --max-subscriptions names the
// rest get one error, sent first, and the first ones are subscribed.
func TestSubscribeInUpgradeRequestTooMany(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.MaxSubscriptions = 3 })
	q := "token=" + url.QueryEscape(token(t, "erin", "")) + "&subscribe=a,b,c,d,e,f,g"
	c := ts.dialURL(ts.wsURL(q), nil)
	c.expectError("too_many_subscriptions")
	for _, ch := range []string{"a", "b", "c"} {
		if m := c.expect("subscribed"); m["channel"] != ch {
			t.Fatalf("subscribed %v, want %q", m, ch)
		}
	}
	c.sync() // and nothing else came before the pong
}

// TestSubscribeParamWithATinyRateLimit: however low the rate limit, every
// channel of the subscribe parameter is subscribed, and the commands that
// follow still have the limiter's whole burst, then are refused.
func TestSubscribeParamWithATinyRateLimit(t *testing.T) {
	// One token per 1000 s: none comes back during the test.
	ts := start(t, func(c *config.Config) { c.RateLimit, c.RateBurst, c.RateLimitStrikes = 0.001, 3, 5 })
	q := "token=" + url.QueryEscape(token(t, "carol", "")) + "&subscribe=a,b,c,d,e,f"
	c := ts.dialURL(ts.wsURL(q), nil)
	for _, ch := range []string{"a", "b", "c", "d", "e", "f"} {
		if m := c.expect("subscribed"); m["channel"] != ch {
			t.Fatalf("subscribed %v, want channel %q", m, ch)
		}
	}
	for range 3 {
		c.sync()
	}
	c.send(map[string]any{"type": "ping", "id": "over"})
	c.expectError("rate_limited")
}

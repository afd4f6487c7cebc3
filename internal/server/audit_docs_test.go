package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

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

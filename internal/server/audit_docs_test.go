package server_test

import (
	"net/http"
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

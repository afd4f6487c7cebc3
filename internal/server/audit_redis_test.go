package server_test

import "testing"

// End to end on two nodes: a publish to channel "org:1:b" with
// idempotencyKey "c" after a publish to "org:1" with key "b:c" is taken for
// a duplicate (the Redis key P:i:CHANNEL:KEY is the same for both, see
// broker/redis/scripts.go:12 and redis.go:231): it answers 200 with
// duplicate:true and the other channel's offset, and org:1:b's subscriber
// never gets the message.
func TestAuditRedisIdempotencyKeyCollision(t *testing.T) {
	rs := sharedRedis(t)
	prefix := rs.Prefix()
	a, b := startNode(t, rs, prefix), startNode(t, rs, prefix)
	bob := b.dial("bob", "1")
	bob.subscribe("org:1:b")
	if st, body := a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:1","data":"x","idempotencyKey":"b:c"}`); st != 200 || body["duplicate"] == true {
		t.Fatalf("publish to org:1: %d %v", st, body)
	}
	st, body := a.api("POST", "/api/publish", testAPIKey, `{"channel":"org:1:b","data":"y","idempotencyKey":"c"}`)
	if st != 200 || body["duplicate"] == true || num(body["offset"]) != 1 {
		t.Fatalf("first publish to org:1:b with a fresh key: %d %v", st, body)
	}
	if m := bob.expect("message"); m["data"] != "y" {
		t.Fatalf("bob got %v", m)
	}
}

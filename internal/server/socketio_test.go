package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/herald-rt/herald/internal/config"
)

// TestSocketIOConformanceMode checks the conformance mode's wiring: the
// suites' timings at /engine.io/ and /socket.io/, the namespaces and the
// "auth" event, and refused requests counted by kind.
func TestSocketIOConformanceMode(t *testing.T) {
	ts := start(t, func(c *config.Config) { c.ConformanceSocketIO = true })
	get := func(path string) (int, string) {
		t.Helper()
		res, err := http.Get(ts.httpURL(path))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	post := func(path, body string) int {
		t.Helper()
		res, err := http.Post(ts.httpURL(path), "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, p := range []string{"/engine.io/", "/socket.io/"} {
		code, body := get(p + "?EIO=4&transport=polling")
		if code != 200 || !strings.Contains(body, `"pingInterval":300,"pingTimeout":200,"maxPayload":1000000`) {
			t.Fatalf("%s handshake: %d %s", p, code, body)
		}
	}
	_, body := get("/socket.io/?EIO=4&transport=polling")
	sid := body[strings.Index(body, `"sid":"`)+7:]
	sid = sid[:strings.IndexByte(sid, '"')]
	q := "/socket.io/?EIO=4&transport=polling&sid=" + sid
	if code := post(q, `40/custom,{"token":"x"}`); code != 200 {
		t.Fatalf("connect: %d", code)
	}
	if _, got := get(q); !strings.HasPrefix(got, `40/custom,{"sid":"`) {
		t.Fatalf("connect answer %q", got)
	}
	if _, got := get(q); got != `42/custom,["auth",{"token":"x"}]` {
		t.Fatalf("auth event %q", got)
	}
	if code, _ := get("/socket.io/?EIO=3&transport=polling"); code != 400 {
		t.Fatalf("EIO=3: %d", code)
	}
	if !containsLine(ts.metricsText(), `herald_socketio_errors_total{kind="bad_request"} 1`) {
		t.Error("refused request not counted")
	}
}

// TestSocketIOOffByDefault: without the conformance mode nothing answers
// at /engine.io/.
func TestSocketIOOffByDefault(t *testing.T) {
	ts := start(t, nil)
	res, err := http.Get(ts.httpURL("/engine.io/?EIO=4&transport=polling"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("status %d", res.StatusCode)
	}
}

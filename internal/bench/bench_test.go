package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/config"
	"github.com/herald-rt/herald/internal/redistest"
	"github.com/herald-rt/herald/internal/server/servertest"
	"github.com/herald-rt/herald/internal/testnet"
)

const (
	testSecret = servertest.Secret
	testAPIKey = servertest.APIKey
)

// TestMain lets the test binary act as a bench worker process (see
// startWorker), so --workers is tested end to end.
func TestMain(m *testing.M) {
	if os.Getenv("HERALD_BENCH_FAKE_WORKER") == "1" {
		fakeWorker(os.Stdin, os.Stdout)
		os.Exit(0)
	}
	if os.Getenv("HERALD_BENCH_WORKER") == "1" {
		if err := WorkerMain(os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if redisSrv != nil {
		redisSrv.Stop()
	}
	os.Exit(code)
}

// redisSrv is a real redis-server, started by the first test that needs one.
var (
	redisOnce sync.Once
	redisSrv  *redistest.Server
	redisErr  error
)

// TestClusterFanout runs fanout against two herald nodes joined by Redis:
// two workers, one per node, and the publisher on the first; every
// subscriber on either node gets every publication.
func TestClusterFanout(t *testing.T) {
	redisOnce.Do(func() { redisSrv, redisErr = redistest.Start() })
	if redisErr != nil {
		t.Fatal(redisErr)
	}
	prefix := redisSrv.Prefix()
	node := func(c *config.Config) { c.Broker, c.RedisURL, c.RedisPrefix = "redis", redisSrv.URL(), prefix }
	a, b := servertest.Start(t, node), servertest.Start(t, node)
	for _, s := range []*servertest.Server{a, b} {
		for deadline := time.Now().Add(5 * time.Second); ; {
			resp, err := http.Get("http://" + s.Addr + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("node not healthy within 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	cfg := testConfig(a.WSURL()+","+b.WSURL(), "fanout")
	cfg.Workers = 2
	cfg.WorkerExe = os.Args[0]
	r := run(t, cfg)
	checkDeliveries(t, r, 50)
	if r.Target != a.WSURL()+","+b.WSURL() {
		t.Fatalf("target %q does not name both nodes", r.Target)
	}
}

// startServer runs a real herald on a random loopback port and returns its
// WebSocket URL.
func startServer(t *testing.T, mutate func(*config.Config)) string {
	t.Helper()
	return servertest.Start(t, mutate).WSURL()
}

func testConfig(url, scenario string) Config {
	c := Defaults()
	c.Scenario = scenario
	c.URL = url
	c.JWTSecret = testSecret
	c.APIKey = testAPIKey
	c.Conns = 50
	c.Concurrency = 8
	c.Rate = 40
	c.Duration = time.Second
	c.Grace = 5 * time.Second
	c.Hold = 200 * time.Millisecond
	c.Quiet = true
	c.ServerPID = os.Getpid() // the server runs in this process
	return c
}

func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	var out strings.Builder
	r, err := Run(t.Context(), cfg, &out, stderrOnFailure(t))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("report:\n%s", out.String())
	return r
}

// stderrOnFailure is a stderr for Run — its progress lines and what worker
// processes print, a crash included — logged only if t fails.
func stderrOnFailure(t *testing.T) io.Writer {
	w := &testnet.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stderr:\n%s", w.String())
		}
	})
	return w
}

// readers are the receive paths built here: both on Linux (except 386),
// the goroutine reader elsewhere.
func readers() []string {
	if epollSupported {
		return []string{"epoll", "goroutine"}
	}
	return []string{"goroutine"}
}

// checkDeliveries asserts the report of a publishing run is sane.
func checkDeliveries(t *testing.T, r *Report, subscribersPerPub uint64) {
	t.Helper()
	if r.Connected != r.Conns || len(r.ConnectErrors) > 0 {
		t.Fatalf("connected %d of %d: %v", r.Connected, r.Conns, r.ConnectErrors)
	}
	if r.Published != r.Scheduled || r.Published == 0 || len(r.PublishErrors) > 0 {
		t.Fatalf("published %d of %d: %v", r.Published, r.Scheduled, r.PublishErrors)
	}
	want := r.Published * subscribersPerPub
	if r.Expected != want || r.Delivered != want {
		t.Fatalf("delivered %d, expected %d, want %d", r.Delivered, r.Expected, want)
	}
	if r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || r.Late != 0 || r.Unparsed != 0 {
		t.Fatalf("lost %d dup %d reordered %d late %d unparsed %d", r.Lost, r.Duplicated, r.Reordered, r.Late, r.Unparsed)
	}
	if r.Latency == nil || r.Latency.Count != int64(want) || r.Latency.P50 <= 0 || r.Latency.P50 > r.Latency.P99 || r.Latency.P99 > r.Latency.Max {
		t.Fatalf("latency %+v", r.Latency)
	}
	if l := r.PublisherLate; l == nil || l.Count != int64(r.Published) || l.P50 > l.Max {
		t.Fatalf("publisher lateness %+v for %d publications", l, r.Published)
	}
	if r.DeliveriesPerSec <= 0 || len(r.Dropped) > 0 || r.Interrupted {
		t.Fatalf("deliveries/s %v dropped %v interrupted %v", r.DeliveriesPerSec, r.Dropped, r.Interrupted)
	}
	if r.ServerRSSBeforeKiB <= 0 || r.ServerRSSEndKiB <= 0 || r.GeneratorCPUSeconds <= 0 {
		t.Fatalf("process measurements missing: %+v", r)
	}
}

func TestFanoutAPI(t *testing.T) {
	url := startServer(t, nil)
	r := run(t, testConfig(url, "fanout"))
	checkDeliveries(t, r, 50)
	if r.Published != 40 {
		t.Fatalf("published %d, want 40", r.Published)
	}
}

func TestFanoutWS(t *testing.T) {
	url := startServer(t, nil)
	cfg := testConfig(url, "fanout")
	cfg.PublishVia = "ws"
	cfg.APIKey = ""
	checkDeliveries(t, run(t, cfg), 50)
}

func TestChannels(t *testing.T) {
	url := startServer(t, nil)
	cfg := testConfig(url, "channels")
	cfg.Rate = 50 // 5 groups of 10: every group gets 10 publications
	checkDeliveries(t, run(t, cfg), 10)
}

func TestConnectStorm(t *testing.T) {
	url := startServer(t, nil)
	r := run(t, testConfig(url, "connect"))
	if r.Connected != 50 || r.ConnectRate <= 0 || r.ConnectLatency == nil || r.ConnectLatency.Count != 50 || len(r.ConnectErrors) > 0 {
		t.Fatalf("%+v", r)
	}
	if r.ConnectLatency.P50 <= 0 || r.ConnectLatency.P50 > r.ConnectLatency.Max {
		t.Fatalf("connect latency %+v", r.ConnectLatency)
	}
}

func TestIdle(t *testing.T) {
	url := startServer(t, nil)
	r := run(t, testConfig(url, "idle"))
	if r.Connected != 50 || r.ConnectRate <= 0 || r.ServerRSSAfterKiB <= 0 || r.ServerRSSEndKiB <= 0 {
		t.Fatalf("%+v", r)
	}
	// Memory per idle connection is taken at the end of the hold (steady
	// state, pings answered), and right after connecting as well: the two
	// differ by what RSS did during the hold.
	got := (r.RSSPerConnKiB - r.RSSPerConnAfterConnectKiB) * float64(r.Connected)
	if want := float64(r.ServerRSSEndKiB - r.ServerRSSAfterKiB); math.Abs(got-want) > 1e-6 {
		t.Fatalf("RSS/conn %.3f at the end, %.3f after connecting: differ by %.3f KiB in all, RSS by %.0f KiB",
			r.RSSPerConnKiB, r.RSSPerConnAfterConnectKiB, got, want)
	}
}

// TestWorkers runs fanout in two worker processes (this test binary, see
// TestMain) with separate source addresses, and merges their results.
func TestWorkers(t *testing.T) {
	url := startServer(t, nil)
	cfg := testConfig(url, "fanout")
	cfg.Workers = 2
	cfg.WorkerExe = os.Args[0]
	r := run(t, cfg)
	checkDeliveries(t, r, 50)
	if r.Workers != 2 {
		t.Fatal("workers not reported")
	}
}

func TestBadTokenReportsConnectErrors(t *testing.T) {
	url := startServer(t, nil)
	cfg := testConfig(url, "connect")
	cfg.JWTSecret = "not-the-server-secret"
	cfg.Conns = 5
	var out strings.Builder
	r, err := Run(t.Context(), cfg, &out, stderrOnFailure(t))
	if !errors.Is(err, errNoConnection) || !strings.Contains(out.String(), "http 401: 5") {
		t.Fatalf("Run: %v, want errNoConnection after the report:\n%s", err, out.String())
	}
	if r.Connected != 0 || r.ConnectErrors["http 401"] != 5 {
		t.Fatalf("connected %d errors %v", r.Connected, r.ConnectErrors)
	}
}

// TestRecovery either measures recovery or, against a server without
// offsets, says so and reports no numbers.
func TestRecovery(t *testing.T) {
	url := startServer(t, func(c *config.Config) {
		c.Namespaces = append(c.Namespaces, config.Namespace{Prefix: "bench", HistorySize: 10000})
	})
	cfg := testConfig(url, "recovery")
	cfg.Duration = 1500 * time.Millisecond
	cfg.DropEvery = 300 * time.Millisecond
	cfg.DropDown = 20 * time.Millisecond
	r := run(t, cfg)
	if len(r.Notes) == 0 {
		t.Fatal("no note about offsets")
	}
	if strings.Contains(r.Notes[0], "NOT MEASURED") {
		if r.Delivered != 0 || r.Latency != nil || r.Recovery != nil {
			t.Fatalf("numbers reported without offsets: %+v", r)
		}
		return
	}
	rc := r.Recovery
	if rc == nil || rc.Reconnects == 0 || r.Delivered == 0 {
		t.Fatalf("recovery not exercised: %+v", rc)
	}
	// With history on the channel every drop is recovered: nothing lost,
	// nothing twice.
	if rc.ReconnectFail != 0 || rc.Recovered != rc.Reconnects || r.Lost != 0 || r.Duplicated != 0 || r.Expected != r.Delivered {
		t.Fatalf("recovery: %+v lost %d dup %d delivered %d of %d", rc, r.Lost, r.Duplicated, r.Delivered, r.Expected)
	}
}

func TestInterruptGivesPartialReport(t *testing.T) {
	url := startServer(t, nil)
	cfg := testConfig(url, "fanout")
	cfg.Duration = 30 * time.Second
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(700*time.Millisecond, cancel)
	start := time.Now()
	var out strings.Builder
	r, err := Run(ctx, cfg, &out, stderrOnFailure(t))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Interrupted || time.Since(start) > 10*time.Second || r.Published >= r.Scheduled {
		t.Fatalf("interrupted %v after %v, published %d of %d", r.Interrupted, time.Since(start), r.Published, r.Scheduled)
	}
	if !strings.Contains(out.String(), "INTERRUPTED") {
		t.Fatalf("report does not say it is partial:\n%s", out.String())
	}
}

func TestValidate(t *testing.T) {
	base := testConfig("ws://127.0.0.1:1/ws", "fanout")
	for name, mutate := range map[string]func(*Config){
		"scenario":      func(c *Config) { c.Scenario = "nope" },
		"secret":        func(c *Config) { c.JWTSecret = "" },
		"api key":       func(c *Config) { c.APIKey = "" },
		"conns":         func(c *Config) { c.Conns = 0 },
		"rate":          func(c *Config) { c.Rate = 0 },
		"via":           func(c *Config) { c.PublishVia = "smoke" },
		"workers":       func(c *Config) { c.Workers = 100 },
		"fd limit":      func(c *Config) { c.Conns = maxOpenFiles() + 10 },
		"non-loop":      func(c *Config) { c.URL = "ws://172.16.0.1:8080/ws" },
		"api-url":       func(c *Config) { c.APIURL = "http://192.168.0.1:8080" },
		"tiny total":    func(c *Config) { c.Rate = 0.1; c.Duration = time.Second },
		"reader":        func(c *Config) { c.Reader = "kqueue" },
		"spin < 0":      func(c *Config) { c.Spin = -time.Millisecond },
		"spin big":      func(c *Config) { c.Spin = 20 * time.Millisecond },
		"url+recovery":  func(c *Config) { c.Scenario = "recovery"; c.SubscribeInURL = true },
		"nodes>workers": func(c *Config) { c.URL = "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws" },
		"non-loop node": func(c *Config) { c.URL = "ws://127.0.0.1:1/ws,ws://10.0.0.1:2/ws"; c.Workers = 2 },
	} {
		c := base
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: validated", name)
		}
	}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestFanoutCompressed: subscribers offer permessage-deflate, the server
// compresses the 2000-byte compressible payloads, every delivery arrives and
// far fewer bytes cross the wire than the payload size. Run in this process
// and in two worker processes (the flag travels in the fleet spec).
func TestFanoutCompressed(t *testing.T) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			url := startServer(t, nil)
			cfg := testConfig(url, "fanout")
			cfg.Compress = true
			cfg.Compressible = true
			cfg.Payload = 2000
			if workers > 1 {
				cfg.Workers = workers
				cfg.WorkerExe = os.Args[0]
			}
			r := run(t, cfg)
			checkDeliveries(t, r, 50)
			c := r.Compression
			if c == nil || !c.Offered || c.AcceptedConns != 50 || c.CompressedFrames != r.Delivered {
				t.Fatalf("compression %+v, delivered %d", c, r.Delivered)
			}
			if r.WireBytes == 0 || r.WireBytesPerDelivery > float64(cfg.Payload)/2 {
				t.Fatalf("wire bytes %d, %.0f per delivery of a %d-byte payload", r.WireBytes, r.WireBytesPerDelivery, cfg.Payload)
			}
			if r.MessageBytesPerDelivery < float64(cfg.Payload) {
				t.Fatalf("inflated message %.0f bytes per delivery, payload %d", r.MessageBytesPerDelivery, cfg.Payload)
			}
		})
	}
}

// TestFanoutWireBytesUncompressed: without --compress every delivery costs at
// least the payload on the wire.
func TestFanoutWireBytesUncompressed(t *testing.T) {
	url := startServer(t, nil)
	cfg := testConfig(url, "fanout")
	cfg.Compressible = true
	cfg.Payload = 2000
	r := run(t, cfg)
	checkDeliveries(t, r, 50)
	if r.Compression != nil {
		t.Fatalf("compression reported without --compress: %+v", r.Compression)
	}
	if r.WireBytesPerDelivery < float64(cfg.Payload) || r.WireBytesPerDelivery < r.MessageBytesPerDelivery {
		t.Fatalf("wire bytes %.0f per delivery, message %.0f, payload %d", r.WireBytesPerDelivery, r.MessageBytesPerDelivery, cfg.Payload)
	}
}

// TestCompressRefused: a server started without compression declines the
// offer; the run still measures, uncompressed, and says so.
func TestCompressRefused(t *testing.T) {
	url := startServer(t, func(c *config.Config) { c.Compression = false })
	cfg := testConfig(url, "fanout")
	cfg.Compress = true
	cfg.Compressible = true
	cfg.Payload = 2000
	var out strings.Builder
	r, err := Run(t.Context(), cfg, &out, stderrOnFailure(t))
	if err != nil {
		t.Fatal(err)
	}
	checkDeliveries(t, r, 50)
	if c := r.Compression; c == nil || c.AcceptedConns != 0 || c.CompressedFrames != 0 {
		t.Fatalf("compression %+v", c)
	}
	if r.WireBytesPerDelivery < float64(cfg.Payload) {
		t.Fatalf("wire bytes %.0f per delivery", r.WireBytesPerDelivery)
	}
	if !strings.Contains(out.String(), "NOT accepted") || !strings.Contains(strings.Join(r.Notes, "\n"), "did NOT accept") {
		t.Fatalf("refusal not reported:\n%s", out.String())
	}
}

// TestReaders runs fanout and channels with each receive path.
func TestReaders(t *testing.T) {
	for _, reader := range readers() {
		t.Run(reader, func(t *testing.T) {
			url := startServer(t, nil)
			cfg := testConfig(url, "fanout")
			cfg.Reader = reader
			r := run(t, cfg)
			checkDeliveries(t, r, 50)
			if r.Reader != reader {
				t.Fatalf("reader %q", r.Reader)
			}
			cfg = testConfig(url, "channels")
			cfg.Reader = reader
			cfg.Rate = 50
			checkDeliveries(t, run(t, cfg), 10)
		})
	}
}

// TestSubscribeInURL: connections subscribed through the upgrade request
// (one channel in connect, two in channels) on both readers, and in two
// worker processes (the flag travels in the fleet spec); every delivery
// arrives.
func TestSubscribeInURL(t *testing.T) {
	for _, reader := range readers() {
		t.Run(reader, func(t *testing.T) {
			url := startServer(t, nil)
			cfg := testConfig(url, "connect")
			cfg.Reader, cfg.SubscribeInURL = reader, true
			if r := run(t, cfg); r.Connected != 50 || len(r.ConnectErrors) > 0 || !r.SubscribeInURL {
				t.Fatalf("%+v", r)
			}
			cfg = testConfig(url, "channels")
			cfg.Reader, cfg.SubscribeInURL, cfg.Rate = reader, true, 50
			checkDeliveries(t, run(t, cfg), 10)
			cfg = testConfig(url, "fanout")
			cfg.Reader, cfg.SubscribeInURL, cfg.Workers = reader, true, 2
			checkDeliveries(t, run(t, cfg), 50)
		})
	}
}

// TestReaderAnswersPings: the server pings every 100 ms and drops a
// connection silent for 2 s; subscribers answer every ping with a pong
// while deliveries flow, so none is dropped over 4 s (a reader that did not
// answer would lose every connection after ≈ 2.1 s, halfway through). The
// timeout leaves room for a busy CI machine running packages in parallel
// under -race: with 1 s, one connection in a clean-clone CI run missed it.
func TestReaderAnswersPings(t *testing.T) {
	for _, reader := range readers() {
		t.Run(reader, func(t *testing.T) {
			url := startPingingServer(t)
			cfg := testConfig(url, "fanout")
			cfg.Reader = reader
			cfg.Duration = 4 * time.Second
			cfg.Rate = 20
			checkDeliveries(t, run(t, cfg), 50)
		})
	}
}

// startPingingServer starts a server that pings every 100 ms and drops a
// connection silent for 2 s.
func startPingingServer(t *testing.T) string {
	return startServer(t, func(c *config.Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 2 * time.Second
	})
}

// TestReaderSeesServerClose: a server that shuts down mid-run closes every
// connection with 1001; each is reported as dropped with that code.
func TestReaderSeesServerClose(t *testing.T) {
	for _, reader := range readers() {
		t.Run(reader, func(t *testing.T) {
			srv := servertest.Start(t, nil)
			cfg := testConfig(srv.WSURL(), "idle")
			cfg.Reader = reader
			cfg.Hold = 5 * time.Second
			cfg.ServerPID = 0
			// Stop once every connection is in (however long a loaded
			// machine takes to connect them), well within the hold.
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				for deadline := time.Now().Add(60 * time.Second); srv.Hub().NumClients() < cfg.Conns && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(300 * time.Millisecond)
				_ = srv.Stop()
			}()
			r := run(t, cfg)
			<-stopped
			if r.Connected != 50 || r.Dropped["close 1001"] != 50 || len(r.Dropped) != 1 {
				t.Fatalf("connected %d, dropped %v", r.Connected, r.Dropped)
			}
		})
	}
}

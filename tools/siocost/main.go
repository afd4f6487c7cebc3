// Command siocost measures what a Socket.IO subscriber costs a running herald
// next to a native /ws subscriber, with the same goroutine-per-connection
// client: the server's resident memory per idle connection, and its CPU per
// delivery when publications from the API fan out to every connection.
//
//	herald serve --insecure-query-auth --api-key siocost-api-key-0123 --max-connections 20000 &
//	go run ./tools/siocost -addr 127.0.0.1:8080 -pid $! -n 2000 -pubs 200 -protocols socketio
//
// It opens n connections of one protocol, all in one channel, waits,
// reads the server's RSS, publishes pubs messages through /api/publish at
// -rate per second, waits until every connection has received them all, and
// reads the server's CPU time; then the same for the other protocol.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "herald's address")
	pid := flag.Int("pid", 0, "herald's process id (for RSS and CPU)")
	n := flag.Int("n", 2000, "connections per protocol")
	pubs := flag.Int("pubs", 200, "publications per protocol")
	rate := flag.Int("rate", 100, "publications per second")
	key := flag.String("api-key", "siocost-api-key-0123", "herald's API key")
	protos := flag.String("protocols", "native,socketio", "protocols to measure, in order: native, socketio (WebSocket only), upgraded (Socket.IO opened on long-polling, then upgraded to WebSocket: socket.io-client's default), polling (Socket.IO long-polling); a fresh server for each gives steadier RSS")
	flag.Parse()
	for _, proto := range strings.Split(*protos, ",") {
		run(*addr, *pid, proto, *n, *pubs, *rate, *key)
	}
}

func run(addr string, pid int, proto string, n, pubs, rate int, key string) {
	channel := "org:" + proto
	org := proto
	rss0 := rss(pid)
	var got atomic.Int64
	conns := make([]net.Conn, 0, n)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	if proto == "polling" {
		pc := newPoller(addr, n)
		for i := 0; i < n; i++ {
			sid := pc.open(org, channel)
			wg.Add(1)
			go func() { defer wg.Done(); pc.loop(sid, &got, stop) }()
		}
	}
	for i := 0; i < n && proto != "polling"; i++ {
		c, r := dial(addr, proto, org, channel)
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				b, _, err := wsutil.ReadServerData(struct {
					io.Reader
					io.Writer
				}{r, c})
				if err != nil {
					return
				}
				if bytes.Contains(b, []byte(`"data":{"seq"`)) {
					got.Add(1)
				}
				if proto != "native" && string(b) == "2" {
					_ = wsutil.WriteClientText(c, []byte("3"))
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	rss1 := rss(pid)
	cpu0 := cpu(pid)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := 0; i < pubs; i++ {
		<-tick.C
		body := fmt.Sprintf(`{"channel":%q,"data":{"seq":%d,"pad":"%s"}}`, channel, i, strings.Repeat("x", 60))
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/publish", strings.NewReader(body))
		req.Header.Set("X-API-Key", key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		res.Body.Close()
	}
	tick.Stop()
	want := int64(n * pubs)
	deadline := time.Now().Add(60 * time.Second)
	for got.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cpu1 := cpu(pid)
	fmt.Printf("%-8s n=%d: RSS +%.1f KiB/conn; deliveries %d of %d; server CPU %.2f µs/delivery\n",
		proto, n, float64(rss1-rss0)/1024/float64(n), got.Load(), want, (cpu1-cpu0).Seconds()*1e6/float64(max(got.Load(), 1)))
	for _, c := range conns {
		c.Close()
	}
	close(stop)
	wg.Wait()
	time.Sleep(2 * time.Second)
}

// poller is a long-polling Socket.IO client's HTTP side: socket.io-client
// with transports: ['polling'] (a GET held until the server has packets, a
// POST per packet sent).
type poller struct {
	base string
	hc   *http.Client
}

func newPoller(addr string, n int) *poller {
	tr := &http.Transport{MaxIdleConns: 2*n + 16, MaxIdleConnsPerHost: 2*n + 16}
	return &poller{base: "http://" + addr + "/socket.io/?EIO=4&transport=polling", hc: &http.Client{Transport: tr}}
}

func (p *poller) get(sid string) []string {
	res, err := p.hc.Get(p.base + "&sid=" + sid)
	if err != nil {
		return nil
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		return nil
	}
	return strings.Split(string(b), "\x1e")
}

func (p *poller) post(sid, body string) {
	res, err := p.hc.Post(p.base+"&sid="+sid, "text/plain", strings.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

// open runs the handshake, the CONNECT and the subscribe; it returns the sid.
func (p *poller) open(org, channel string) string {
	res, err := p.hc.Get(p.base)
	if err != nil {
		log.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	sid := string(b)
	if !strings.HasPrefix(sid, `0{"sid":"`) {
		log.Fatalf("polling handshake: %q", b)
	}
	sid = sid[len(`0{"sid":"`):]
	sid = sid[:strings.IndexByte(sid, '"')]
	p.post(sid, `40{"userId":"u","org":"`+org+`"}`)
	p.post(sid, `421["subscribe",`+strconv.Quote(channel)+`]`)
	for acked := false; !acked; {
		for _, pkt := range p.get(sid) {
			acked = acked || strings.HasPrefix(pkt, "431")
		}
	}
	return sid
}

// loop polls until stop, counting deliveries and answering pings.
func (p *poller) loop(sid string, got *atomic.Int64, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			p.post(sid, "1")
			return
		default:
		}
		pkts := p.get(sid)
		if pkts == nil {
			return
		}
		for _, pkt := range pkts {
			switch {
			case pkt == "2":
				p.post(sid, "3")
			case strings.Contains(pkt, `"data":{"seq"`):
				got.Add(1)
			}
		}
	}
}

func dial(addr, proto, org, channel string) (net.Conn, io.Reader) {
	u := "ws://" + addr + "/ws?userId=u&org=" + org + "&subscribe=" + channel
	switch proto {
	case "socketio":
		u = "ws://" + addr + "/socket.io/?EIO=4&transport=websocket"
	case "upgraded":
		p := newPoller(addr, 1)
		defer p.hc.CloseIdleConnections() // as a browser would, soon after
		return upgrade(addr, p.open(org, channel))
	}
	c, br, _, err := ws.Dial(context.Background(), u)
	if err != nil {
		log.Fatal(err)
	}
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	if proto == "socketio" {
		rw := struct {
			io.Reader
			io.Writer
		}{r, c}
		read := func() string {
			b, _, err := wsutil.ReadServerData(rw)
			if err != nil {
				log.Fatal(err)
			}
			return string(b)
		}
		read() // open
		_ = wsutil.WriteClientText(c, []byte(`40{"userId":"u","org":"`+org+`"}`))
		if a := read(); !strings.HasPrefix(a, "40{") {
			log.Fatalf("connect: %q", a)
		}
		_ = wsutil.WriteClientText(c, []byte(`421["subscribe",`+strconv.Quote(channel)+`]`))
		for !strings.HasPrefix(read(), "431") {
		}
	}
	return c, r
}

// upgrade moves the polling session sid to WebSocket as socket.io-client
// does: the probe, then the upgrade packet.
func upgrade(addr, sid string) (net.Conn, io.Reader) {
	c, br, _, err := ws.Dial(context.Background(), "ws://"+addr+"/socket.io/?EIO=4&transport=websocket&sid="+sid)
	if err != nil {
		log.Fatal(err)
	}
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	_ = wsutil.WriteClientText(c, []byte("2probe"))
	b, _, err := wsutil.ReadServerData(struct {
		io.Reader
		io.Writer
	}{r, c})
	if err != nil || string(b) != "3probe" {
		log.Fatalf("probe: %q %v", b, err)
	}
	_ = wsutil.WriteClientText(c, []byte("5"))
	return c, r
}

func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v * 1024
		}
	}
	return 0
}

func cpu(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100
}

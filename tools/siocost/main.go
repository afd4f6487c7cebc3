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
	protos := flag.String("protocols", "native,socketio", "protocols to measure, in order (a fresh server for each gives steadier RSS)")
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
	for i := 0; i < n; i++ {
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
				if proto == "socketio" && string(b) == "2" {
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
	wg.Wait()
	time.Sleep(2 * time.Second)
}

func dial(addr, proto, org, channel string) (net.Conn, io.Reader) {
	u := "ws://" + addr + "/ws?userId=u&org=" + org + "&subscribe=" + channel
	if proto == "socketio" {
		u = "ws://" + addr + "/socket.io/?EIO=4&transport=websocket"
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

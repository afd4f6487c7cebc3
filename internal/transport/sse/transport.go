package sse

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport"
)

// Transport serves Server-Sent Events on --sse-path (default /sse; empty
// turns it off):
//
//	GET  PATH?channel=a&channel=b   the event stream (see Request)
//	POST PATH/command               one native command, answered in the response
//
// Make one with New and give it to the server's list of transports.
type Transport struct {
	host   transport.Host
	path   string
	wire   hub.Wire
	policy *auth.Policy

	streams sync.Map // client id → *stream, for POSTs naming their stream
	posts   postLimits

	open     prometheus.Gauge
	opened   prometheus.Counter
	refused  *prometheus.CounterVec
	badIDs   prometheus.Counter
	commands *prometheus.CounterVec
}

// New returns the SSE transport.
func New() *Transport { return &Transport{} }

// Name implements transport.Transport.
func (t *Transport) Name() string { return "sse" }

// Mount implements transport.Transport: registers the SSE wire and the two
// endpoints, unless --sse-path is empty.
func (t *Transport) Mount(mux *http.ServeMux, host transport.Host) error {
	cfg := host.Config()
	if cfg.SSEPath == "" {
		return nil
	}
	t.host, t.path = host, cfg.SSEPath
	t.policy = auth.NewPolicy(cfg.Namespaces)
	t.posts.init(cfg.RateLimit, cfg.RateBurst)
	t.wire = host.Hub().RegisterWire("sse", encode)
	t.open = prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_sse_streams", Help: "Open Server-Sent Events streams."})
	t.opened = prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_sse_streams_total", Help: "Server-Sent Events streams opened."})
	t.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_sse_refused_total",
		Help: "Event stream requests refused before streaming for what they asked, by error code (credentials and connection limits are counted by herald_auth_failures_total and herald_connections_refused_total)."}, []string{"code"})
	t.badIDs = prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_sse_bad_last_event_ids_total",
		Help: "Event streams resumed with a Last-Event-ID herald did not write: every channel reported recovered:false."})
	t.commands = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_sse_commands_total",
		Help: "Commands POSTed to the SSE command endpoint, by outcome (ok, or the error code)."}, []string{"outcome"})
	host.Metrics().Registry.MustRegister(t.open, t.opened, t.refused, t.badIDs, t.commands)

	mux.HandleFunc("GET "+t.path, t.serveStream)
	mux.HandleFunc("POST "+t.path+"/command", t.serveCommand)
	mux.HandleFunc("OPTIONS "+t.path, t.preflight)
	mux.HandleFunc("OPTIONS "+t.path+"/command", t.preflight)
	return nil
}

// refuse answers a request the stream or the command endpoint turns down.
func (t *Transport) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	t.refused.WithLabelValues(code).Inc()
	t.host.Sparse().Info("event stream request refused", "code", code, "path", r.URL.Path, "remote", r.RemoteAddr)
	writeError(w, status, code, msg)
}

// serveStream opens an event stream: the request is checked (channels,
// identity, origin, limits, permissions) before anything is written, so a
// refusal is an HTTP status EventSource reports and does not retry; then
// the connection is taken from net/http and becomes a hub client written
// like any other.
func (t *Transport) serveStream(w http.ResponseWriter, r *http.Request) {
	cfg := t.host.Config()
	if r.Method == http.MethodHead { // the "GET" pattern serves HEAD too
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	}
	req, rerr := ParseRequest(r, cfg.MaxSubscriptions)
	if rerr != nil {
		t.refuse(w, r, rerr.Status, rerr.Code, rerr.Message)
		return
	}
	origin := r.Header.Get("Origin")
	id, ref := t.host.Admit(origin, r.Host, auth.TokenFromRequest(r), r.URL.Query, r.RemoteAddr)
	if ref != nil {
		writeError(w, ref.Status, ref.Code, ref.Message)
		return
	}
	// The session checks every subscribe again; this check only makes a
	// forbidden channel a 403 rather than a stream that lacks it.
	unvouched := make([]bool, len(req.Channels))
	for i, ch := range req.Channels {
		if err := t.policy.Authorize(id, auth.OpSubscribe, ch); err != nil {
			t.refuse(w, r, http.StatusForbidden, string(protocol.CodeOf(err)), errMessage(err)+": "+ch)
			return
		}
		// Recovery needs history; where the namespace refuses it, the
		// channel is subscribed without and says recovered:false.
		unvouched[i] = req.Resume && t.policy.Authorize(id, auth.OpHistory, ch) != nil
	}
	if req.BadID {
		t.badIDs.Inc()
		t.host.Sparse().Info("event stream resumed with a malformed Last-Event-ID: every channel recovered:false", "remote", r.RemoteAddr)
	}

	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.host.Sparse().Warn("event stream: cannot take the connection from net/http", "err", err)
		writeError(w, http.StatusInternalServerError, string(protocol.CodeInternal), "internal error")
		return
	}
	_ = nc.SetDeadline(time.Time{}) // net/http's request deadlines
	if brw.Reader.Buffered() > 0 {
		// The client sent more after its request: a stream reads nothing.
		_ = nc.Close()
		return
	}

	st := &stream{t: t, nc: nc, cursor: resumeCursor(req, unvouched), unvouched: unvouched}
	o := out{st}
	st.sess = t.host.NewSession(id, nc, hub.ClientOptions{
		Transport: hubTransport{},
		Wire:      t.wire,
		PerClient: st,
		OneWay:    true,
		OnGone:    st.gone,
	})
	st.c = st.sess.Client()

	head := responseHead(origin)
	first := retryLine()
	connected := t.host.Connected(st.sess)
	first = AppendEvent(first, ControlEvent(protocol.TypeConnected), protocol.AppendConnected(nil, &connected))
	so := &setupOut{out: o}
	setup := func() {
		st.cmdMu.Lock() // one command at a time in the session, POSTs included
		defer st.cmdMu.Unlock()
		for i, ch := range req.Channels {
			cmd := protocol.Command{Type: protocol.TypeSubscribe, Channel: ch}
			if req.Resume && !unvouched[i] {
				cmd.Since = claimedSince(req.Claims, ch)
			}
			st.sess.Run(&cmd, so)
		}
	}
	t.streams.Store(st.c.ID, st)
	t.open.Inc() // until forget
	err = st.c.Greet(head, first, setup)
	if err != nil {
		if ref := t.host.LimitRefusal(err, id.UserID, nc.RemoteAddr()); ref != nil {
			writeRaw(nc, ref.Status, ref.Code, ref.Message)
			st.c.Gone(0)
			return
		}
		if !errors.Is(err, hub.ErrShuttingDown) {
			t.host.Log().Debug("event stream failed while greeting", "err", err, "remote", nc.RemoteAddr())
		}
		return
	}
	t.opened.Inc()
	if so.failed {
		// A channel could not be subscribed (the broker unavailable, a
		// limit): the client reconnects and tries again, recovering what
		// it missed on the others.
		st.c.Close(protocol.CloseResubscribe, "a channel could not be subscribed; reconnect")
	}
	st.watch()
}

// setupOut is the Out of the subscribes a stream starts with: as out, and
// it notes whether any was answered with an error.
type setupOut struct {
	out
	failed bool
}

func (o *setupOut) Reply(doc []byte) {
	if docType(doc) == protocol.TypeError {
		o.failed = true
	}
	o.out.Reply(doc)
}

// resumeCursor is a new stream's cursor: for a resumed stream, each
// channel it may recover at the position the client claims, until its
// subscribe sets the one the broker answers. So a channel whose subscribe
// is refused for now (the broker unavailable) keeps its claim in the ids
// of the events the stream still sends (another channel's), and the
// reconnect that follows the stream's close recovers it; left unknown, it
// would be missing from them, and recover nothing (recovered:false).
func resumeCursor(req Request, unvouched []bool) *Cursor {
	c := NewCursor(req.Channels)
	if !req.Resume {
		return c
	}
	for i, ch := range req.Channels {
		if pos, ok := req.Claims.Lookup(ch); ok && !unvouched[i] {
			c.Set(i, pos)
		}
	}
	return c
}

// claimedSince is the since a resumed stream subscribes channel with: the
// position the id claims for it or, when it claims none, a position in no
// epoch, which recovers nothing and says recovered:false — the client had
// a stream and cannot be vouched for on this channel.
func claimedSince(c Claims, channel string) *protocol.Since {
	pos, ok := c.Lookup(channel)
	if !ok {
		pos = Position{Epoch: noEpoch}
	}
	off := pos.Offset
	return &protocol.Since{Offset: &off, Epoch: pos.Epoch}
}

// noEpoch is an epoch no broker makes (they make hex digits and dashes).
const noEpoch = "none"

// responseHead is the head of a stream's response. The body ends when the
// connection does (no length, no chunking: nothing to frame per write).
func responseHead(origin string) []byte {
	h := "HTTP/1.1 200 OK\r\n" +
		"Content-Type: text/event-stream; charset=utf-8\r\n" +
		"Cache-Control: no-store\r\n" +
		"Connection: close\r\n" +
		"X-Accel-Buffering: no\r\n" // nginx: pass events on as they come
	if origin != "" {
		// Admit checked it against --allowed-origins.
		h += "Access-Control-Allow-Origin: " + origin + "\r\nVary: Origin\r\n"
	}
	return []byte(h + "\r\n")
}

// forget drops a stream that has ended.
func (t *Transport) forget(st *stream) {
	if t.streams.CompareAndDelete(st.c.ID, st) {
		t.open.Dec()
	}
}

// errMessage is the client-facing message of err.
func errMessage(err error) string {
	if pe := (*protocol.Error)(nil); errors.As(err, &pe) {
		return pe.Message
	}
	return "internal error"
}

// writeError answers a refused request with herald's JSON error body.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Code: code, Message: msg})
}

type errorBody struct {
	OK      bool   `json:"ok"`
	Code    string `json:"error"`
	Message string `json:"message"`
}

// writeRaw answers on a connection taken from net/http, then closes it.
func writeRaw(nc net.Conn, status int, code, msg string) {
	body, _ := json.Marshal(errorBody{Code: code, Message: msg})
	head := "HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n" +
		"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n"
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = nc.Write(append([]byte(head), body...))
}

// nopConn is the connection of a session that has none: the one a POSTed
// command runs in when it names no stream of its user on this node. It
// is never registered with the hub, so nothing is written to it.
type nopConn struct{ net.Conn }

func (nopConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (nopConn) Write(p []byte) (int, error)      { return len(p), nil }
func (nopConn) Close() error                     { return nil }
func (nopConn) SetDeadline(time.Time) error      { return nil }
func (nopConn) SetReadDeadline(time.Time) error  { return nil }
func (nopConn) SetWriteDeadline(time.Time) error { return nil }
func (nopConn) RemoteAddr() net.Addr             { return nil }
func (nopConn) LocalAddr() net.Addr              { return nil }

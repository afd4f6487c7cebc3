package socketio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport"
	"github.com/herald-rt/herald/internal/transport/socketio/engine"
	"github.com/herald-rt/herald/internal/transport/socketio/wire"
	"github.com/herald-rt/herald/internal/transport/ws"
)

// Transport is Socket.IO as a herald transport (transport.Transport): it
// serves --socketio-path, or in --conformance-socketio mode the protocol
// suites' reference server at /socket.io/ and /engine.io/.
type Transport struct {
	mu      sync.Mutex
	servers []interface{ Close() }
	// bridge is set by Mount when Socket.IO is served (not in conformance
	// mode), for EmitWithAck.
	bridge atomic.Pointer[bridge]
	// direct and path serve the sockets the server's accept loop upgrades
	// (TakesRaw), outside the conformance mode; set by Mount.
	direct *Server
	path   string
}

// TakesRaw implements transport.RawAcceptor: a GET of the Socket.IO path
// that opens a socket over WebSocket from the start.
func (t *Transport) TakesRaw(target []byte) bool {
	return t.direct != nil && t.direct.TakesRaw(t.path, target)
}

// AcceptRaw implements transport.RawAcceptor.
func (t *Transport) AcceptRaw(up transport.RawUpgraded) { t.direct.AcceptRaw(up) }

// New returns the Socket.IO transport.
func New() *Transport { return &Transport{} }

// Name implements transport.Transport.
func (t *Transport) Name() string { return "socketio" }

// Close ends every Engine.IO session (transport.Closer).
func (t *Transport) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.servers {
		s.Close()
	}
}

// Conformance timings: the protocol test suites' reference server.
const (
	conformancePingInterval   = 300 * time.Millisecond
	conformancePingTimeout    = 200 * time.Millisecond
	conformanceMaxPayload     = 1000000
	conformanceConnectTimeout = time.Second
)

// minPingTimeout is the least pingTimeout announced (see PingTimeout).
const minPingTimeout = time.Second

// PingTimeout is the Engine.IO pingTimeout for herald's heartbeat: herald
// closes a connection silent for pongTimeout, and pings every pingInterval;
// Engine.IO closes a session whose pong has not come pingTimeout after the
// ping, so pingTimeout = pongTimeout - pingInterval (at least a second).
func PingTimeout(pingInterval, pongTimeout time.Duration) time.Duration {
	return max(pongTimeout-pingInterval, minPingTimeout)
}

// Mount implements transport.Transport.
func (t *Transport) Mount(mux *http.ServeMux, host transport.Host) error {
	cfg := host.Config()
	if !cfg.ConformanceSocketIO && cfg.SocketIOPath == "" {
		return nil
	}
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_socketio_errors_total",
		Help: "Socket.IO and Engine.IO requests and packets refused, by kind."}, []string{"kind"})
	if err := host.Metrics().Registry.Register(errs); err != nil {
		return err
	}
	onErr := func(kind string, err error) {
		errs.WithLabelValues(kind).Inc()
		host.Sparse().Note("socket.io input refused: "+kind, 1, func(n int64) {
			host.Log().Info("socket.io input refused", "kind", kind, "err", err, "refused", n)
		})
	}
	if cfg.ConformanceSocketIO {
		eo := engine.Options{
			PingInterval: conformancePingInterval, PingTimeout: conformancePingTimeout,
			MaxPayload: conformanceMaxPayload, OnError: onErr, Go: host.Group().Go,
		}
		sio := NewServer(eo, Options{Conformance: true, ConnectTimeout: conformanceConnectTimeout, OnError: onErr})
		eio := NewEngineEcho(eo)
		t.servers = append(t.servers, sio, eio)
		mux.Handle("/socket.io/", sio)
		mux.Handle("/engine.io/", eio)
		host.Log().Warn("socket.io conformance mode is ON: /socket.io/ and /engine.io/ answer as the protocol test suites' reference server, without authentication; never use in production")
		return nil
	}
	emits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_socketio_emits_total",
		Help: "Server emits with an ack (POST /api/emit), by socket and outcome: acked, timeout, too_many_pending, disconnected, binary_unsupported."}, []string{"result"})
	if err := host.Metrics().Registry.Register(emits); err != nil {
		return err
	}
	retries := prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_socketio_recovery_retries_total",
		Help: "Socket.IO recoveries the broker could not serve for now (unavailable): the connection was closed without a DISCONNECT, so the client reconnects with the same pid and offset and recovers then."})
	if err := host.Metrics().Registry.Register(retries); err != nil {
		return err
	}
	onRetry := func(room string) {
		retries.Inc()
		host.Sparse().Note("socket.io recovery retried", 1, func(n int64) {
			host.Log().Info("socket.io recovery refused by the broker for now (unavailable): connection closed without DISCONNECT, the client reconnects and recovers then", "room", room, "closed", n)
		})
	}
	w := host.Hub().RegisterWire("socketio", encode)
	frames := registerFrames(host.Hub(), w)
	tr := &bridge{host: host, wire: w, emits: emits, wsOpts: &ws.ConnOptions{
		MaxMessage: cfg.MaxMessageBytes, ReadTimeout: cfg.PongTimeout, Log: host.Log(), Sparse: host.Sparse(), Metrics: host.Metrics(),
	}}
	t.bridge.Store(tr)
	maxSessions := cfg.MaxConnections
	if maxSessions <= 0 {
		maxSessions = 1 << 16
	}
	eo := engine.Options{
		PingInterval: cfg.PingInterval,
		PingTimeout:  PingTimeout(cfg.PingInterval, cfg.PongTimeout),
		MaxPayload:   int(cfg.MaxMessageBytes),
		MaxSessions:  maxSessions,
		QueueBytes:   int(max(cfg.ClientQueueBytes, cfg.MaxMessageBytes+64<<10)),
		CheckOrigin: func(r *http.Request) bool {
			return transport.OriginAllowed(cfg.AllowedOrigins, r.Header.Get("Origin"), r.Host)
		},
		OnError: onErr,
		Go:      host.Group().Go,
	}
	sio := NewServer(eo, Options{Connect: tr.connect, Recovery: true, OnError: onErr, BrokerLive: host.BrokerLive, OnRecoveryRetry: onRetry,
		WebSocket: &WebSocketOptions{Poller: host.Poller(), Group: host.Group(), Frames: frames}})
	t.servers = append(t.servers, sio)
	path := cfg.SocketIOPath
	if !strings.HasSuffix(path, "/") {
		path += "/"
	}
	mux.Handle(path, sio)
	mux.Handle(strings.TrimSuffix(path, "/"), sio)
	t.direct, t.path = sio, path
	return nil
}

// encode is the socketio wire's encoder: the shared part of a delivery
// (AppendDelivery), or of a join/leave notice emitted as "join"/"leave"
// with the native notice as argument; each socket's tail closes it.
func encode(m *hub.Message) []byte {
	if n := m.Notice; n != nil {
		b := append([]byte{byte(wire.EMessage), byte(wire.SEvent), '['}, wire.AppendJSONString(nil, n.Type)...)
		b = append(b, ',')
		return m.AppendJSON(b)
	}
	return AppendDelivery(make([]byte, 0, m.SizeHint()+32), &m.Pub)
}

// bridge connects Socket.IO sockets to herald's sessions.
type bridge struct {
	host   transport.Host
	wire   hub.Wire
	wsOpts *ws.ConnOptions // a direct socket's reading
	emits  *prometheus.CounterVec
}

// count counts an emit's outcomes.
func (b *bridge) count(res []SocketAck) {
	for _, r := range res {
		result := r.Code
		if result == "" {
			result = "acked"
		}
		b.emits.WithLabelValues(result).Inc()
	}
}

// connect admits a CONNECT exactly like a /ws upgrade and starts its
// session: its hub client writes a direct socket's WebSocket itself, else
// into the Engine.IO session.
func (b *bridge) connect(c *Conn, cred Credentials) (Runner, error) {
	hs := c.hs
	id, ref := b.host.Admit(hs.origin, hs.host, cred.Token, cred.Query, hs.remote)
	if ref != nil {
		return nil, &Refusal{Code: ref.Code, Message: ref.Message}
	}
	var sess transport.Session
	if l := c.direct; l != nil {
		wc := &ws.Conn{NC: l.nc, Opts: b.wsOpts, OnText: l.onText, OnBinary: l.onBinary, Out: sioOut{c}}
		sess = b.host.NewSession(id, l.nc, hub.ClientOptions{Wire: b.wire, PerClient: c, Transport: directTransport,
			OnGone: func() { wc.Gone(); c.gone() }})
		wc.Sess = sess
		l.wc = wc
	} else {
		sess = b.host.NewSession(id, &pipe{c: c}, hub.ClientOptions{Transport: closer{}, Wire: b.wire, PerClient: c, OneWay: true,
			OnGone: c.upgradedGone})
		c.takeWS = func(nc net.Conn, pending *bufio.Reader) bool { return b.takeWS(c, sess, nc, pending) }
	}
	hc := sess.Client()
	c.hc.Store(hc)
	if err := hc.Greet(nil, nil, nil); err != nil {
		c.hc.Store(nil)
		if c.direct != nil {
			c.direct.wc = nil
		}
		return nil, b.refused(c, hc, id.UserID, err)
	}
	return &runner{sess: sess, out: sioOut{c}}, nil
}

// refused answers a CONNECT whose Greet failed with err.
func (b *bridge) refused(c *Conn, hc *hub.Client, user string, err error) error {
	if ref := b.host.LimitRefusal(err, user, c.hs.remote); ref != nil {
		if c.direct != nil {
			// Gone closes the socket: the refusal goes first.
			c.connectError("/", ref.Code, ref.Message)
			hc.Gone(0)
			return errAnswered
		}
		hc.Gone(0)
		return &Refusal{Code: ref.Code, Message: ref.Message}
	}
	if errors.Is(err, hub.ErrShuttingDown) {
		if c.direct != nil { // the hub closes the socket (1001)
			return errAnswered
		}
		return &Refusal{Code: "shutting_down", Message: "server is shutting down"}
	}
	return err
}

// errAnswered is a refused CONNECT already answered (or closed).
var errAnswered = errors.New("connect refused")

// directTransport is the hub.Transport of direct sockets: an Engine.IO ping
// packet as keepalive (the client answers with a pong, which Touches the
// client), and an Engine.IO close packet then a WebSocket close frame,
// whose answer is awaited, as close — but for a disconnect through the
// server API, the Socket.IO DISCONNECT packet (see closer).
var directTransport hub.Transport = sioWS{ping: ws.TextFrame([]byte{byte(wire.EPing)})}

type sioWS struct{ ping []byte }

func (t sioWS) Ping() []byte { return t.ping }

func (sioWS) Close(code int, reason string) ([]byte, bool) {
	if code == protocol.CloseDisconnected {
		return directDisconnect, true
	}
	return append(ws.TextFrame([]byte{byte(wire.EClose)}), ws.CloseFrame(code, reason)...), true
}

// closer is the hub.Transport of a socket on an Engine.IO session: no keepalive (the Engine.IO
// session pings), and its closes mapped onto Socket.IO. A disconnect
// through the server API (protocol.CloseDisconnected) is the Socket.IO
// server's own disconnect: a DISCONNECT packet, after which socket.io-client
// does not reconnect (its reason: "io server disconnect") and closes the
// Engine.IO session itself, as it does with Socket.IO's server — the hub
// waits for that (awaitPeer), for at most its grace period: closing the
// session at once could reach socket.io-client before the DISCONNECT packet
// (it handles decoded packets a tick later), which then reconnects. Every other close
// (shutdown, slow consumer, lost publications…) ends the Engine.IO session
// only, so the client reconnects, and recovers, by itself.
type closer struct{}

func (closer) Ping() []byte { return nil }

func (closer) Close(code int, _ string) ([]byte, bool) {
	if code == protocol.CloseDisconnected {
		return directDisconnect, true
	}
	return nil, false
}

// disconnectPacket is the DISCONNECT packet of "/"; directDisconnect the
// same as a WebSocket frame.
var (
	disconnectPacket = wire.AppendSPacketHead([]byte{byte(wire.EMessage)}, wire.SDisconnect, 0, "/", -1)
	directDisconnect = ws.TextFrame(disconnectPacket)
)

// runner runs a socket's commands in its herald session.
type runner struct {
	sess transport.Session
	out  transport.Out
}

func (r *runner) Run(cmd []byte) { r.sess.Handle(cmd, r.out) }

func (r *runner) Close() { r.sess.Client().Gone(0) }

// sioOut turns a session's native answers into Socket.IO acks.
type sioOut struct{ c *Conn }

func (o sioOut) Buffer(n int) []byte { return make([]byte, 0, n) }
func (o sioOut) Reply(doc []byte)    { o.c.WriteNative(doc) }
func (o sioOut) Burst(doc []byte) bool {
	o.c.writeNative(doc, true)
	return true
}

func (o sioOut) Subscribed(doc []byte, _ transport.Subscription, replay []*hub.Message) bool {
	first := o.c.collectNative(doc)
	hc := o.c.hc.Load()
	if hc == nil {
		return false
	}
	return hc.SendBurst(first, replay)
}

// Wrap implements hub.PerClient: it moves the socket's position in the
// publication's room, skips a delivery the socket's event filter refuses,
// and closes the shared bytes with the socket's tail (its recovery offset
// and the closing bracket), as one WebSocket frame: what a direct socket's
// hub client writes, and what a socket on an Engine.IO session's pipe
// takes apart into a packet.
func (c *Conn) Wrap(m *hub.Message, shared []byte) (before, body, after []byte) {
	c.posMu.Lock()
	defer c.posMu.Unlock()
	var pos *position
	if m.Notice == nil {
		if pos = c.roomLocked(m.Pub.Channel); pos != nil && m.Pub.Offset > pos.offset {
			pos.offset = m.Pub.Offset
		}
		if !c.filter.wants(m.Pub.Event) {
			return nil, nil, nil
		}
	}
	return c.frameLocked(m, shared, pos)
}

// frameLocked is Wrap's answer; pos is its room of m,
// if any. When its tail is the one every socket like it has — no recovery
// offset, or the offset of a socket whose one room is m's, at m's offset
// and epoch (most sockets) — it is sent the whole frame encoded once for
// them all (FrameWires). Otherwise the frame header and the tail are its
// own, carved from its slab around the shared bytes. posMu is held.
func (c *Conn) frameLocked(m *hub.Message, shared []byte, pos *position) (before, body, after []byte) {
	if fw := c.srv.o.WebSocket.Frames; fw != nil {
		switch {
		case m.Notice != nil || c.pid == "":
			return nil, m.Bytes(fw.closed), nil
		case pos != nil && c.last.only && pos.offset == m.Pub.Offset && pos.epoch == m.Pub.Epoch:
			pos.epoch = m.Pub.Epoch // the broker's copy: the next comparison is of pointers
			return nil, m.Bytes(fw.offset), nil
		}
	}
	buf := c.carveLocked(ws.Headroom + c.tailSizeLocked())
	hdr := (*[ws.Headroom]byte)(buf[:ws.Headroom])
	if m.Notice != nil {
		return ws.TextHeader(hdr, len(shared)+1), shared, closeBracket
	}
	buf = c.appendTailLocked(buf)
	after = buf[ws.Headroom:len(buf):len(buf)]
	return ws.TextHeader(hdr, len(shared)+len(after)), shared, after
}

// slabSize is the size of the slabs a direct socket's per-delivery bytes
// are carved from.
const slabSize = 512

// carveLocked returns a buffer of length ws.Headroom with room for n bytes
// in all, carved from the socket's slab: what earlier deliveries took of it
// is queued, and never written again. posMu is held.
func (c *Conn) carveLocked(n int) []byte {
	if cap(c.slab)-len(c.slab) < n {
		c.slab = make([]byte, 0, max(slabSize, n))
	}
	start := len(c.slab)
	c.slab = c.slab[:start+n]
	return c.slab[start : start+ws.Headroom : start+n]
}

// pipe is the net.Conn a socket on an Engine.IO session has its hub client
// write: it takes the WebSocket frames the hub writes (every frame a
// socket's hub client is given is one final, unmasked text frame, whatever
// its transport, so that nothing changes at an upgrade: Conn.OnUpgrade)
// apart and queues each packet on the Engine.IO session, which writes it
// on whichever transport the session uses (polling or WebSocket). It has
// no descriptor, so the hub writes it with blocking Write calls from one
// goroutine at a time.
type pipe struct {
	c    *Conn
	mu   sync.Mutex
	hdr  [ws.Headroom]byte // the header of the frame being read
	nh   int               // bytes of hdr read; 0 while a packet is read
	want int               // bytes of the current frame's packet still due
	pkt  []byte
}

// headerSize is the size of a frame header whose second byte is b1.
func headerSize(b1 byte) int {
	switch b1 & 0x7f {
	case 126:
		return 4
	case 127:
		return 10
	}
	return 2
}

// payloadSize is the payload length a whole frame header h announces.
func payloadSize(h []byte) int {
	switch len(h) {
	case 4:
		return int(binary.BigEndian.Uint16(h[2:]))
	case 10:
		return int(binary.BigEndian.Uint64(h[2:]))
	}
	return int(h[1] & 0x7f)
}

func (p *pipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		if p.pkt == nil {
			size := 2
			if p.nh >= 2 {
				size = headerSize(p.hdr[1])
			}
			k := copy(p.hdr[p.nh:size], b)
			p.nh += k
			b = b[k:]
			if p.nh < 2 || p.nh < headerSize(p.hdr[1]) {
				continue
			}
			p.want = payloadSize(p.hdr[:p.nh])
			p.nh = 0
			if p.want > 0 {
				p.pkt = make([]byte, 0, p.want)
			}
			continue
		}
		k := min(p.want, len(b))
		p.pkt = append(p.pkt, b[:k]...)
		b = b[k:]
		p.want -= k
		if p.want == 0 {
			pkt := p.pkt
			p.pkt = nil
			if err := p.c.ess.SendWait(pkt); err != nil {
				return n - len(b), net.ErrClosed
			}
		}
	}
	return n, nil
}

func (p *pipe) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (p *pipe) Close() error                     { p.c.ess.Close("server close"); return nil }
func (p *pipe) LocalAddr() net.Addr              { return pipeAddr{} }
func (p *pipe) RemoteAddr() net.Addr             { return pipeAddr{} }
func (p *pipe) SetDeadline(time.Time) error      { return nil }
func (p *pipe) SetReadDeadline(time.Time) error  { return nil }
func (p *pipe) SetWriteDeadline(time.Time) error { return nil }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "engine.io" }
func (pipeAddr) String() string  { return "engine.io" }

package socketio

import (
	"bufio"
	"net"
	"syscall"

	"github.com/herald-rt/herald/internal/transport"
	"github.com/herald-rt/herald/internal/transport/ws"
)

// Upgraded sockets.
//
// A socket that opened on long-polling (socket.io-client's default) and
// upgraded to WebSocket becomes a direct socket (direct.go) the moment the
// upgrade completes: the Engine.IO session hands its WebSocket over
// (engine.Upgrader) right after the client's upgrade packet, and the
// socket's hub client is rebound onto it (hub.Client.Rebind). What the hub
// client had queued goes out first, through the pipe and the Engine.IO
// session's queue, which Release drains; everything queued from the switch
// on is written to the WebSocket by the hub client itself, and the poller
// reads it. Nothing needs reframing at the switch: a socket's hub client
// is always given WebSocket frames, which the pipe takes apart. From then
// on the socket has no Engine.IO session, no heartbeat timer and no
// goroutine of its own; its pings, closes and reading are a direct
// socket's.

// OnUpgrade implements engine.Upgrader: a connected socket whose herald
// session runs moves onto the WebSocket (takeWS); any other (not yet
// connected, or in conformance mode) stays on its Engine.IO session.
func (c *Conn) OnUpgrade(nc net.Conn, pending *bufio.Reader) bool {
	if c.takeWS == nil || c.hc.Load() == nil {
		return false
	}
	return c.takeWS(nc, pending)
}

// takeWS moves c, whose herald session is sess, onto the WebSocket nc
// (pending: what was read from it and not handled yet). It reports false,
// the socket left on its Engine.IO session, when the session is ending or
// nc has no descriptor for the poller to watch.
func (b *bridge) takeWS(c *Conn, sess transport.Session, nc net.Conn, pending *bufio.Reader) bool {
	hc := sess.Client()
	if _, ok := nc.(syscall.Conn); c.hc.Load() != hc || !ok {
		return false
	}
	l := &wsLink{srv: c.srv, sid: c.ess.ID(), c: c, nc: nc}
	wc := &ws.Conn{NC: nc, Opts: b.wsOpts, OnText: l.onText, OnBinary: l.onBinary, Out: sioOut{c}, Sess: sess}
	l.wc = wc
	if !hc.Rebind(nc, directTransport, false, func() { c.moved.Store(l) }, c.ess.Release) {
		return false
	}
	wc.Watch(c.srv.o.WebSocket.Poller, pending)
	return true
}

// upgradedGone is the OnGone of a socket's hub client on an Engine.IO
// session: once the socket has moved onto its WebSocket, its end is a
// direct socket's (see bridge.connect).
func (c *Conn) upgradedGone() {
	if l := c.moved.Load(); l != nil {
		l.wc.Gone()
		c.gone()
	}
}

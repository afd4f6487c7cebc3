package engine

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-rt/herald/internal/transport/socketio/wire"
)

// writeTimeout bounds one write to a WebSocket; a client that takes nothing
// for this long is dropped.
const writeTimeout = 10 * time.Second

// wsConn is one accepted WebSocket. Reads happen on its reader goroutine
// only; writes hold wmu.
type wsConn struct {
	nc  net.Conn
	br  *bufio.Reader // bytes the client sent right behind the handshake; else nc
	max int
	wmu sync.Mutex
}

// acceptWS upgrades r. The HTTP server's deadlines are cleared: the
// heartbeat bounds a WebSocket's life from here on.
func acceptWS(w http.ResponseWriter, r *http.Request, max int) (*wsConn, error) {
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		if nc != nil {
			_ = nc.Close()
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	c := &wsConn{nc: nc, max: max}
	if rw != nil && rw.Reader.Buffered() > 0 {
		c.br = rw.Reader
	}
	return c, nil
}

func (c *wsConn) source() io.Reader {
	if c.br != nil {
		return c.br
	}
	return c.nc
}

// writeFrames writes packets, each its own frame, with one deadline.
func (c *wsConn) writeFrames(q []out) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	bufs := make(net.Buffers, 0, 3*len(q))
	var hdrs [][ws.MaxHeaderSize]byte = make([][ws.MaxHeaderSize]byte, len(q))
	for i := range q {
		op := ws.OpText
		if q[i].binary {
			op = ws.OpBinary
		}
		n := encodeHeader(&hdrs[i], op, q[i].size())
		bufs = append(bufs, hdrs[i][:n], q[i].data)
		if len(q[i].tail) > 0 {
			bufs = append(bufs, q[i].tail)
		}
	}
	_, err := bufs.WriteTo(c.nc)
	return err
}

// encodeHeader writes a final unmasked frame header for n payload bytes.
func encodeHeader(h *[ws.MaxHeaderSize]byte, op ws.OpCode, n int) int {
	h[0] = 0x80 | byte(op)
	switch {
	case n <= 125:
		h[1] = byte(n)
		return 2
	case n <= 0xFFFF:
		h[1] = 126
		h[2], h[3] = byte(n>>8), byte(n)
		return 4
	}
	h[1] = 127
	for i := 0; i < 8; i++ {
		h[2+i] = byte(uint64(n) >> (56 - 8*i))
	}
	return 10
}

// closeWith sends a close frame and closes the connection.
func (c *wsConn) closeWith(code ws.StatusCode, reason string) {
	c.sendClose(code, reason)
	_ = c.nc.Close()
}

func (c *wsConn) sendClose(code ws.StatusCode, reason string) {
	c.wmu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = ws.WriteFrame(c.nc, ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
	c.wmu.Unlock()
}

func (c *wsConn) closeNow() { _ = c.nc.Close() }

// closeDraining sends a close frame, then reads and drops what the client
// still sends (for up to a second and 1 MiB) before closing: closing with
// unread input makes the kernel reset the connection, which can destroy
// the close frame before the client reads it. Only the reader goroutine
// calls it.
func (c *wsConn) closeDraining(code ws.StatusCode, reason string) {
	c.sendClose(code, reason)
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.source(), 1<<20))
	_ = c.nc.Close()
}

// writeWS is a session's WebSocket writer: it runs while there is something
// queued, writing it all each round, and closes the socket once the session
// is closed and its last packets (the close packet) are out.
func (ss *Session) writeWS(c *wsConn) {
	for {
		ss.mu.Lock()
		q := ss.takeLocked()
		if len(q) == 0 {
			ss.writing = false
			ss.broadcastLocked() // Release waits for the writer's end
			closed := ss.closed
			ss.mu.Unlock()
			if closed {
				c.closeWith(ws.StatusNormalClosure, "")
			}
			return
		}
		ss.mu.Unlock()
		if err := c.writeFrames(q); err != nil {
			c.closeNow()
			ss.mu.Lock()
			ss.writing = false
			ss.broadcastLocked()
			ss.mu.Unlock()
			ss.close("transport error", false)
			return
		}
	}
}

// readWS reads a WebSocket until it fails or the session ends. For an
// upgrade (probe set), it first runs the probe: 2probe is answered 3probe,
// and the client's upgrade packet makes this socket the session's
// transport.
func (ss *Session) readWS(c *wsConn, probe bool) {
	rd := &wsutil.Reader{
		Source:         c.source(),
		State:          ws.StateServerSide,
		CheckUTF8:      true,
		MaxMessageSize: int64(c.max),
	}
	ctl := wsutil.ControlFrameHandler(&lockedWriter{c}, ws.StateServerSide)
	rd.OnIntermediate = ctl
	for {
		hdr, err := rd.NextFrame()
		if err != nil {
			ss.wsFailed(c, probe, err)
			return
		}
		if hdr.OpCode.IsControl() {
			if err := ctl(hdr, rd); err != nil {
				ss.wsFailed(c, probe, err)
				return
			}
			continue
		}
		data, err := io.ReadAll(rd)
		if err != nil {
			ss.wsFailed(c, probe, err)
			return
		}
		var p wire.EPacket
		if hdr.OpCode == ws.OpBinary {
			p = wire.EPacket{Type: wire.EMessage, Data: data, Binary: true}
		} else if p, err = wire.ParseEPacket(data); err != nil {
			ss.srv.report(KindBadPacket, err)
			if probe {
				ss.probeFailed(c)
				return
			}
			ss.close("parse error", true)
			return
		}
		if probe {
			if probe = ss.probeStep(c, p); probe {
				continue
			}
			if ss.isProbe(c) { // the probe failed
				ss.probeFailed(c)
				return
			}
			if p.Type == wire.EUpgrade {
				if ss.handOver(c) {
					return
				}
				continue
			}
		}
		if !ss.handle(p) {
			return
		}
	}
}

// probeStep runs one packet of the upgrade; it reports whether the socket
// is still probing.
func (ss *Session) probeStep(c *wsConn, p wire.EPacket) bool {
	switch {
	case p.Type == wire.EPing && string(p.Data) == "probe":
		if err := c.writeFrames([]out{{data: probePacket}}); err != nil {
			return false
		}
		ss.mu.Lock()
		ss.wakeLocked() // the pending poll ends with a noop
		ss.mu.Unlock()
		return true
	case p.Type == wire.EUpgrade:
		ss.mu.Lock()
		if ss.closed || ss.probe != c {
			ss.mu.Unlock()
			return false
		}
		ss.probe, ss.ws, ss.upgraded = nil, c, true
		ss.wakeLocked()
		ss.kickLocked()
		ss.mu.Unlock()
		return false
	}
	return false
}

// Upgrader is a Handler that takes a session's WebSocket over once the
// upgrade from long-polling completes, to read and write it by itself.
type Upgrader interface {
	// OnUpgrade is called once, on the WebSocket's reader, right after the
	// client's upgrade packet, between two frames (and like the Handler's
	// other methods, never concurrently with them): nc is the WebSocket,
	// pending the bytes read from it and not yet handled (nil when none).
	// Returning false leaves the socket to the session. Returning true
	// takes it: the session reads no more, and the handler calls Release
	// before it writes the socket itself.
	OnUpgrade(nc net.Conn, pending *bufio.Reader) bool
}

// handOver offers the upgraded WebSocket c to the handler; it reports
// whether the handler took it.
func (ss *Session) handOver(c *wsConn) bool {
	u, ok := ss.h.(Upgrader)
	if !ok {
		return false
	}
	var pending *bufio.Reader
	if c.br != nil && c.br.Buffered() > 0 {
		pending = c.br
	}
	ss.inMu.Lock()
	defer ss.inMu.Unlock()
	if ss.isClosed() {
		return false
	}
	return u.OnUpgrade(c.nc, pending)
}

// Release ends a session whose WebSocket its handler took (Upgrader)
// without ending the WebSocket: the heartbeat stops, and once everything
// queued has been written — nothing can be queued from then on — the
// session is gone, with no close packet and without OnClose, and the
// socket is left with no deadline. It returns ErrClosed when the session
// was closed first or a write failed (its WebSocket is closed then).
func (ss *Session) Release() error {
	ss.mu.Lock()
	if ss.timer != nil {
		ss.timer.Stop()
	}
	ss.waitLocked(func() bool { return ss.writing || len(ss.queue) > 0 })
	if ss.closed {
		ss.mu.Unlock()
		return ErrClosed
	}
	ss.closed = true // nothing queues from now on; no OnClose
	ws := ss.ws
	ss.ws = nil // the handler's now: the session keeps nothing of it
	ss.mu.Unlock()
	ss.srv.forget(ss)
	if ws != nil {
		_ = ws.nc.SetDeadline(time.Time{})
	}
	return nil
}

func (ss *Session) isProbe(c *wsConn) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.probe == c
}

// probeFailed drops a WebSocket whose upgrade did not complete; the session
// goes on polling.
func (ss *Session) probeFailed(c *wsConn) {
	ss.mu.Lock()
	if ss.probe == c {
		ss.probe = nil
	}
	ss.mu.Unlock()
	c.closeNow()
}

// wsFailed handles a read error: a message over maxPayload closes with
// 1009, anything else ends the session as a transport error.
func (ss *Session) wsFailed(c *wsConn, probe bool, err error) {
	if probe && ss.isProbe(c) {
		ss.probeFailed(c)
		return
	}
	switch {
	case errors.Is(err, wsutil.ErrMessageTooLarge) || errors.Is(err, wsutil.ErrFrameTooLarge):
		ss.srv.report(KindTooLarge, err)
		c.closeDraining(ws.StatusMessageTooBig, "message over maxPayload")
	case errors.As(err, new(wsutil.ClosedError)):
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	default:
		ss.srv.report(KindBadPacket, err)
		c.closeWith(ws.StatusProtocolError, "")
	}
	ss.close("transport close", false)
}

// lockedWriter writes control frame answers (pong, close) under the
// connection's write lock.
type lockedWriter struct{ c *wsConn }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	_ = w.c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return w.c.nc.Write(p)
}

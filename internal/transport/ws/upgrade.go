package ws

import (
	"bufio"
	"net"
	"net/http"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// DeflateParams is the permessage-deflate negotiation offered when
// compression is on. No context takeover either way: nothing to keep per
// connection, and each publication can be compressed once for every
// subscriber.
var DeflateParams = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}

// NegotiateDeflate is wsflate's negotiation of a permessage-deflate offer,
// except that an offer it cannot parse (an unknown parameter, a bad value, a
// parameter twice) is declined, as RFC 7692 §5 says a server must: the
// connection is upgraded without compression, or with a later offer the
// client listed. wsflate returns an error instead, which fails the
// handshake with a 500 that quotes the offer back.
func NegotiateDeflate(ext *wsflate.Extension, opt httphead.Option) (httphead.Option, error) {
	accept, err := ext.Negotiate(opt)
	if err != nil {
		return httphead.Option{}, nil
	}
	return accept, nil
}

// Upgraded is a WebSocket connection upgraded from a net/http request
// whose handshake response has not been sent yet.
type Upgraded struct {
	NC net.Conn
	// Response is the handshake response, held so that it can leave with
	// the first message (hub.Client.Greet).
	Response []byte
	// Pending holds frames the client sent right behind its handshake, or
	// is nil.
	Pending *bufio.Reader
	// Deflate is set when permessage-deflate was negotiated.
	Deflate bool
}

// UpgradeHTTP upgrades r (admitted by the caller) to a WebSocket,
// negotiating permessage-deflate when compression is set. The handler may
// return right after it: the connection is hijacked from net/http. When
// the upgrade fails, the upgrader's error response has been written and
// the connection closed.
func UpgradeHTTP(w http.ResponseWriter, r *http.Request, compression bool) (Upgraded, error) {
	var up ws.HTTPUpgrader // writes only to hw's buffer: no timeout needed
	var ext *wsflate.Extension
	if compression {
		ext = &wsflate.Extension{Parameters: DeflateParams}
		up.Negotiate = func(opt httphead.Option) (httphead.Option, error) { return NegotiateDeflate(ext, opt) }
	}
	hw := &holdResponse{ResponseWriter: w}
	nc, rw, _, err := up.Upgrade(r, hw)
	if err != nil {
		if nc != nil {
			hw.buf.FlushTo(nc) // the upgrader's error response
			_ = nc.Close()
		}
		return Upgraded{}, err
	}
	u := Upgraded{NC: nc, Response: hw.buf}
	if rw != nil && rw.Reader.Buffered() > 0 {
		u.Pending = rw.Reader // frames the client sent right behind the handshake
	}
	if ext != nil {
		_, u.Deflate = ext.Accepted()
	}
	return u, nil
}

// holdResponse is the ResponseWriter handed to the upgrader: its Hijack
// points the connection's buffered writer at buf, so the handshake response
// can go out together with the first frame instead of in a write of its own.
type holdResponse struct {
	http.ResponseWriter
	buf HeldBytes
}

func (h *holdResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err == nil {
		rw.Writer.Reset(&h.buf)
	}
	return nc, rw, err
}

// HeldBytes collects a handshake response instead of writing it.
type HeldBytes []byte

func (b *HeldBytes) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}

// FlushTo writes the held bytes to nc, bounded in time (error responses).
func (b HeldBytes) FlushTo(nc net.Conn) {
	if len(b) == 0 {
		return
	}
	_ = nc.SetWriteDeadline(time.Now().Add(HandshakeWriteTimeout))
	_, _ = nc.Write(b)
}

// HandshakeWriteTimeout bounds writing a handshake response or refusal.
const HandshakeWriteTimeout = 10 * time.Second

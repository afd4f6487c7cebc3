package ws

import (
	"bytes"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport"
)

// RawUpgrader upgrades connections whose request head an accept loop has
// read itself, without net/http: gobwas/ws's zero-copy Upgrader parses and
// checks the head while callbacks pick out the token, Origin and Host. A
// handshake's state — the upgrader with its callbacks bound, the values they
// find, the response buffer — is pooled, so a handshake allocates only the
// strings it keeps. Set the fields before the first Upgrade; it is safe for
// concurrent use.
type RawUpgrader struct {
	// Compression offers permessage-deflate (DeflateParams).
	Compression bool
	// Admit decides the request once its head is parsed (transport.Host's
	// Admit); a refusal fails the handshake.
	Admit func(origin, host, token string, query func() url.Values, remote any) (auth.Identity, *transport.Refusal)

	pool sync.Pool // *RawUpgrade
}

// RawUpgrade is one upgraded handshake, from Upgrade until Release.
type RawUpgrade struct {
	// Identity is who the request authenticated as.
	Identity auth.Identity
	// Response is the held handshake response (write it with the first
	// message, hub.Client.Greet, before Release).
	Response HeldBytes
	// Deflate is set when permessage-deflate was negotiated.
	Deflate bool
	// RawQuery is the request's query, undecoded.
	RawQuery string

	u                           *RawUpgrader
	c                           net.Conn
	authorization, origin, host string
	ref                         *transport.Refusal
	up                          ws.Upgrader
	ext                         wsflate.Extension
	negotiate                   func(httphead.Option) (httphead.Option, error) // NegotiateDeflate for ext, bound once
	hc                          handshakeConn
}

// Upgrade upgrades c, whose request head (all of it, and nothing after
// it) is head. On success it returns the handshake, to be given back with
// Release once its Response is written. On failure it returns the error
// and, when the request is to be answered with an HTTP refusal (refused by
// Admit, or too malformed for the upgrader to answer), that refusal;
// otherwise the upgrader's own error response has been written to c. The
// caller closes c after a failure.
func (u *RawUpgrader) Upgrade(c net.Conn, head []byte) (*RawUpgrade, *transport.Refusal, error) {
	r, _ := u.pool.Get().(*RawUpgrade)
	if r == nil {
		r = u.newRawUpgrade()
	}
	r.c = c
	r.hc.head.Reset(head)
	r.up.Negotiate = nil
	if u.Compression {
		r.ext = wsflate.Extension{Parameters: DeflateParams}
		r.up.Negotiate = r.negotiate
	}
	_, err := r.up.Upgrade(&r.hc)
	r.Response = r.hc.out
	_, r.Deflate = r.ext.Accepted() // zero, so false, when compression is off
	if err != nil {
		ref := r.ref
		if ref == nil {
			if len(r.Response) > 0 {
				r.Response.FlushTo(c) // the upgrader's own error response
			} else { // gobwas answers nothing to a request line or header it cannot parse
				ref = &transport.Refusal{Status: http.StatusBadRequest, Code: string(protocol.CodeBadRequest), Message: "malformed HTTP request"}
			}
		}
		u.Release(r)
		return nil, ref, err
	}
	return r, nil, nil
}

// Header returns the request's Authorization, Origin and Host fields.
func (r *RawUpgrade) Header() (authorization, origin, host string) {
	return r.authorization, r.origin, r.host
}

func (u *RawUpgrader) newRawUpgrade() *RawUpgrade {
	r := &RawUpgrade{u: u}
	r.up = ws.Upgrader{
		OnRequest:       r.onRequest,
		OnHost:          r.onHost,
		OnHeader:        r.onHeader,
		OnBeforeUpgrade: r.onBeforeUpgrade,
	}
	r.negotiate = func(opt httphead.Option) (httphead.Option, error) { return NegotiateDeflate(&r.ext, opt) }
	return r
}

// Release clears r and returns it to its upgrader's pool; r must not be
// used afterwards.
func (u *RawUpgrader) Release(r *RawUpgrade) {
	out := r.hc.out
	if cap(out) > 4096 {
		out = nil
	}
	r.c, r.authorization, r.origin, r.host, r.RawQuery = nil, "", "", "", ""
	r.Identity, r.ref, r.Response, r.Deflate = auth.Identity{}, nil, nil, false
	r.ext = wsflate.Extension{}
	r.hc.head.Reset(nil)
	r.hc.out = out[:0]
	u.pool.Put(r)
}

func (r *RawUpgrade) onRequest(uri []byte) error {
	if _, q, ok := bytes.Cut(uri, []byte("?")); ok {
		r.RawQuery = string(q)
	}
	return nil
}

func (r *RawUpgrade) onHost(h []byte) error {
	r.host = string(h)
	return nil
}

func (r *RawUpgrade) onHeader(key, value []byte) error {
	switch {
	case bytes.EqualFold(key, []byte("Authorization")):
		r.authorization = string(value)
	case bytes.EqualFold(key, []byte("Origin")):
		r.origin = string(value)
	}
	return nil
}

func (r *RawUpgrade) query() url.Values {
	q, _ := url.ParseQuery(r.RawQuery)
	return q
}

func (r *RawUpgrade) onBeforeUpgrade() (ws.HandshakeHeader, error) {
	r.Identity, r.ref = r.u.Admit(r.origin, r.host, auth.TokenFrom(r.authorization, r.query), r.query, r.c.RemoteAddr())
	if r.ref != nil {
		return nil, ws.RejectConnectionError(ws.RejectionStatus(r.ref.Status))
	}
	return nil, nil
}

// handshakeConn is what the upgrader reads the head from and writes its
// response to; the response is held until it can go out with the first frame.
type handshakeConn struct {
	head bytes.Reader
	out  HeldBytes
}

func (h *handshakeConn) Read(p []byte) (int, error)  { return h.head.Read(p) }
func (h *handshakeConn) Write(p []byte) (int, error) { return h.out.Write(p) }

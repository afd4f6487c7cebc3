package sse

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"

	"golang.org/x/time/rate"

	"github.com/herald-rt/herald/internal/auth"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport"
)

// StreamHeader names, on a POSTed command, the stream (its clientId, from
// herald/connected) the command belongs to. When that stream is on the
// node that gets the POST and is the same user's, the command runs in the
// stream's session: it shares the stream's rate limit, and a publication
// is not echoed to the stream, as a WebSocket publisher does not receive
// its own. Otherwise the command runs on its own, under a per-user rate
// limit.
const StreamHeader = "X-Herald-Client"

// bodySlack is room for a command's fields around its data.
const bodySlack = 64 << 10

// serveCommand runs one command POSTed in the native protocol's JSON — the
// same document a /ws client sends — and answers with the document a /ws
// client would get back: published (when the command has an id), history,
// presence, pong, or an error with an HTTP status that matches its code.
// A command answered with nothing (a publication without id) gets 204.
// Identity comes from the Authorization header only (or, with
// --insecure-query-auth, the query's identity): never from a cookie, so a
// page of another site cannot make a browser send a command for its user.
// Subscriptions belong to the stream's URL: subscribe and unsubscribe are
// refused here.
func (t *Transport) serveCommand(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	token := auth.TokenFrom(r.Header.Get("Authorization"), nil)
	id, ref := t.host.Admit(origin, r.Host, token, r.URL.Query, r.RemoteAddr)
	if ref != nil {
		t.commands.WithLabelValues(ref.Code).Inc()
		writeError(w, ref.Status, ref.Code, ref.Message)
		return
	}
	if origin != "" {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Vary", "Origin")
	}
	limit := t.host.Config().MaxMessageBytes + bodySlack
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			t.answerError(w, r, protocol.NewError("too_large", "a command is at most --max-message-bytes plus 64 KiB"), nil)
			return
		}
		t.answerError(w, r, protocol.NewError(protocol.CodeBadRequest, "the request body could not be read"), nil)
		return
	}
	cmd, err := protocol.DecodeCommand(body)
	if err != nil {
		t.answerError(w, r, err, cmd.ID)
		return
	}
	switch cmd.Type {
	case protocol.TypeSubscribe, protocol.TypeUnsubscribe:
		t.answerError(w, r, protocol.NewError(protocol.CodeBadRequest,
			"a stream's channels are those of its URL: open it again with the new list (and its last event id, which keeps the position of every channel in both)"), cmd.ID)
		return
	}

	var o httpOut
	if st := t.streamOf(r, id); st != nil {
		st.cmdMu.Lock()
		st.sess.Run(&cmd, &o)
		st.cmdMu.Unlock()
	} else {
		if !t.posts.allow(id.UserID) {
			t.answerError(w, r, protocol.NewError(protocol.CodeRateLimited, "too many commands; slow down"), cmd.ID)
			return
		}
		sess := t.host.NewSession(id, nopConn{}, hub.ClientOptions{Transport: hubTransport{}, Wire: t.wire, OneWay: true})
		sess.Run(&cmd, &o)
	}
	t.answer(w, o.docs)
}

// streamOf returns the stream the request names (StreamHeader) when it is
// on this node, id's, and open.
func (t *Transport) streamOf(r *http.Request, id auth.Identity) *stream {
	name := r.Header.Get(StreamHeader)
	if name == "" {
		return nil
	}
	v, ok := t.streams.Load(name)
	if !ok {
		return nil
	}
	st := v.(*stream)
	if st.sess.Identity().UserID != id.UserID || st.c.Closing() {
		return nil // a closing stream's session runs nothing, silently
	}
	return st
}

// answer writes the session's answer: its document, or 204 for none.
func (t *Transport) answer(w http.ResponseWriter, docs [][]byte) {
	if len(docs) == 0 {
		t.commands.WithLabelValues("ok").Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	doc := docs[len(docs)-1] // one per command; an error, if any, comes last
	status, outcome := http.StatusOK, "ok"
	if docType(doc) == protocol.TypeError {
		code := errorCode(doc)
		status, outcome = statusOf(code), string(code)
	}
	t.commands.WithLabelValues(outcome).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(doc)
}

// answerError answers a command refused before it reached a session, with
// the native error document.
func (t *Transport) answerError(w http.ResponseWriter, r *http.Request, err error, id []byte) {
	code := protocol.CodeOf(err)
	t.host.Sparse().Info("command refused", "code", code, "remote", r.RemoteAddr)
	t.answer(w, [][]byte{protocol.AppendError(nil, code, errMessage(err), "", id)})
}

// errorCode reads the code of a native error document.
func errorCode(doc []byte) protocol.Code {
	var e struct {
		Code protocol.Code `json:"code"`
	}
	if err := json.Unmarshal(doc, &e); err != nil || e.Code == "" {
		return protocol.CodeInternal
	}
	return e.Code
}

// statusOf is the HTTP status of a native error code.
func statusOf(code protocol.Code) int {
	switch code {
	case protocol.CodeForbidden:
		return http.StatusForbidden
	case protocol.CodeRateLimited:
		return http.StatusTooManyRequests
	case protocol.CodeUnavailable:
		return http.StatusServiceUnavailable
	case protocol.CodeUnauthorized:
		return http.StatusUnauthorized
	case protocol.CodeNotFound:
		return http.StatusNotFound
	case "too_large":
		return http.StatusRequestEntityTooLarge
	case protocol.CodeInternal:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// preflight answers a browser's CORS preflight for the stream (EventSource
// polyfills that send Authorization) and the command endpoint, for origins
// --allowed-origins allows.
func (t *Transport) preflight(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || !transport.OriginAllowed(t.host.Config().AllowedOrigins, origin, r.Host) {
		t.refuse(w, r, http.StatusForbidden, "origin_not_allowed", "origin not allowed")
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "GET, POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, Cache-Control, "+StreamHeader)
	h.Set("Access-Control-Max-Age", "600")
	h.Set("Vary", "Origin")
	w.WriteHeader(http.StatusNoContent)
}

// httpOut collects a POSTed command's answer for its HTTP response.
type httpOut struct{ docs [][]byte }

func (o *httpOut) Buffer(n int) []byte   { return make([]byte, 0, n) }
func (o *httpOut) Reply(doc []byte)      { o.docs = append(o.docs, doc) }
func (o *httpOut) Burst(doc []byte) bool { o.docs = append(o.docs, doc); return true }
func (o *httpOut) Subscribed(doc []byte, _ transport.Subscription, _ []*hub.Message) bool {
	o.docs = append(o.docs, doc)
	return true
}

// postLimits rate-limits the commands of users POSTing without a stream on
// this node, with --rate-limit and --rate-burst per user. The table is
// bounded: past maxPostUsers users it starts over.
type postLimits struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	users map[string]*rate.Limiter
}

const maxPostUsers = 1 << 16

func (p *postLimits) init(perSecond float64, burst int) {
	p.limit, p.burst = rate.Limit(perSecond), burst
	p.users = make(map[string]*rate.Limiter)
}

func (p *postLimits) allow(user string) bool {
	if p.limit <= 0 {
		return true
	}
	p.mu.Lock()
	l := p.users[user]
	if l == nil {
		if len(p.users) >= maxPostUsers {
			clear(p.users)
		}
		l = rate.NewLimiter(p.limit, p.burst)
		p.users[user] = l
	}
	p.mu.Unlock()
	return l.Allow()
}

package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
)

// Limits of the server API.
const (
	maxBatchCommands     = 1000
	maxBroadcastChannels = 1000
)

// apiError is the JSON body of every non-2xx API answer.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func badRequest(code protocol.Code, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: string(code), msg: msg}
}

func (s *Server) routeAPI(mux *http.ServeMux) {
	mux.Handle("POST /api/publish", s.api("publish", s.apiPublish))
	mux.Handle("POST /api/broadcast", s.api("broadcast", s.apiBroadcast))
	mux.Handle("POST /api/send", s.api("send", s.apiSend))
	mux.Handle("POST /api/batch", s.api("batch", s.apiBatch))
	mux.Handle("POST /api/disconnect", s.api("disconnect", s.apiDisconnect))
	mux.Handle("POST /api/emit", s.api("emit", s.apiEmit))
	mux.Handle("GET /api/stats", s.api("stats", s.apiStats))
	mux.Handle("GET /api/channels", s.api("channels", s.apiChannels))
	mux.Handle("GET /api/history", s.api("history", s.apiHistory))
	mux.Handle("GET /api/presence", s.api("presence", s.apiPresence))
	unknown := s.api("unknown", func(r *http.Request) (any, error) {
		return nil, &apiError{status: http.StatusNotFound, code: string(protocol.CodeNotFound), msg: "no such endpoint or method: " + r.Method + " " + r.URL.Path}
	})
	mux.Handle("/api/", unknown)
	mux.HandleFunc("POST /call", s.handleCall)
	mux.Handle("/call", unknown) // other methods: the API's JSON 404, not net/http's plain-text 405
}

// authorizeAPI checks the API key from X-API-Key or "Authorization: apikey KEY".
// With no key configured every request is refused with 403.
func (s *Server) authorizeAPI(r *http.Request) *apiError {
	if len(s.apiKeys) == 0 {
		return &apiError{status: http.StatusForbidden, code: string(protocol.CodeForbidden), msg: "server API disabled: no API key configured"}
	}
	key := r.Header.Get("X-API-Key")
	if key == "" {
		if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "apikey ") {
			key = strings.TrimSpace(a[7:])
		}
	}
	ok := 0
	for _, k := range s.apiKeys {
		ok |= subtle.ConstantTimeCompare([]byte(key), k)
	}
	if key == "" || ok != 1 {
		s.metrics.AuthFailures.WithLabelValues("api_key").Inc()
		s.sparse.Note("refused: api key", 1, func(count int64) {
			s.log.Info("api request refused: bad API key", "refused", count, "path", r.URL.Path, "remote", r.RemoteAddr)
		})
		return &apiError{status: http.StatusUnauthorized, code: string(protocol.CodeUnauthorized), msg: "missing or invalid API key"}
	}
	return nil
}

// api adapts a data function to an authenticated JSON endpoint.
func (s *Server) api(name string, f func(*http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		defer func() { s.metrics.APIRequests.WithLabelValues(name, strconv.Itoa(status)).Inc() }()
		if e := s.authorizeAPI(r); e != nil {
			status = e.status
			writeError(w, e.status, e.code, e.msg)
			return
		}
		out, err := f(r)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				s.log.Error("api failed", "endpoint", name, "err", err)
				ae = &apiError{status: http.StatusInternalServerError, code: string(protocol.CodeInternal), msg: "internal error"}
			}
			status = ae.status
			writeError(w, ae.status, ae.code, ae.msg)
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// decodeBody reads a JSON object of at most limit bytes into v.
func decodeBody(r *http.Request, limit int64, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", msg: "request body larger than " + strconv.FormatInt(limit, 10) + " bytes"}
		}
		return badRequest(protocol.CodeBadRequest, "cannot read body")
	}
	return decodeJSON(body, v, "body")
}

// decodeJSON decodes data (what: "body", or "params" of a /call) into v, with
// an error that names the field or the position, never a Go type.
func decodeJSON(data []byte, v any, what string) error {
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return badRequest(protocol.CodeBadRequest, what+" must be a JSON object")
	case errors.As(err, &te):
		return badRequest(protocol.CodeBadRequest, "field "+strconv.Quote(te.Field)+" has the wrong type")
	case errors.As(err, &se):
		// encoding/json's own words ("invalid character 'x' after object
		// key", "exceeded max depth") and the position, counting from 1;
		// they quote at most one character of the body.
		return badRequest(protocol.CodeBadJSON, what+" is not valid JSON: "+se.Error()+" (at byte "+strconv.FormatInt(se.Offset, 10)+")")
	}
	return badRequest(protocol.CodeBadJSON, what+" is not valid JSON")
}

func (s *Server) bodyLimit() int64 { return s.cfg.MaxMessageBytes + envelopeSlack }

func checkChannelName(ch string) error {
	if ch == "" {
		return badRequest(protocol.CodeChannelRequired, `"channel" is required`)
	}
	if !protocol.ValidChannel(ch) {
		return badRequest(protocol.CodeInvalidChannel, "invalid channel name: letters, digits and _ - : . @, 1 to 200 bytes")
	}
	return nil
}

type publishRequest struct {
	Channel        string          `json:"channel"`
	Data           json.RawMessage `json:"data"`
	Event          string          `json:"event"`
	IdempotencyKey string          `json:"idempotencyKey"`
}

type deliveredResponse struct {
	OK        bool `json:"ok"`
	Delivered int  `json:"delivered"`
}

type publishResponse struct {
	OK        bool   `json:"ok"`
	Delivered int    `json:"delivered"`
	Offset    uint64 `json:"offset"`
	Epoch     string `json:"epoch"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

// publish is the data function shared by /api/publish, /api/broadcast,
// /api/batch and /call.
func (s *Server) publish(ctx context.Context, req publishRequest) (publishResponse, error) {
	if err := checkChannelName(req.Channel); err != nil {
		return publishResponse{}, err
	}
	if int64(len(req.Data)) > s.cfg.MaxMessageBytes {
		return publishResponse{}, &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", msg: "data larger than max-message-bytes"}
	}
	if req.Event != "" && !protocol.ValidEvent(req.Event) {
		return publishResponse{}, badRequest(protocol.CodeBadRequest, "event must be 1-64 letters, digits or _ - : . @")
	}
	if len(req.IdempotencyKey) > protocol.MaxIdemKeyLen {
		return publishResponse{}, badRequest(protocol.CodeBadRequest, "idempotencyKey longer than 128 bytes")
	}
	res, err := s.broker.Publish(ctx, req.Channel, broker.Publication{Data: req.Data, Event: req.Event},
		s.publishOptions(s.policy.Namespace(req.Channel), req.IdempotencyKey))
	if err != nil {
		return publishResponse{}, err
	}
	s.metrics.Publications.WithLabelValues("api").Inc()
	return publishResponse{OK: true, Delivered: res.Delivered, Offset: res.Offset, Epoch: res.Epoch, Duplicate: res.Duplicate}, nil
}

func (s *Server) apiPublish(r *http.Request) (any, error) {
	var req publishRequest
	if err := decodeBody(r, s.bodyLimit(), &req); err != nil {
		return nil, err
	}
	return s.publish(r.Context(), req)
}

type broadcastRequest struct {
	Channels []string        `json:"channels"`
	Data     json.RawMessage `json:"data"`
	Event    string          `json:"event"`
}

func (s *Server) broadcast(ctx context.Context, chs []string, data json.RawMessage, event string) (int, error) {
	if len(chs) == 0 {
		return 0, badRequest(protocol.CodeChannelRequired, `"channels" must list at least one channel`)
	}
	if len(chs) > maxBroadcastChannels {
		return 0, badRequest(protocol.CodeBadRequest, "at most "+strconv.Itoa(maxBroadcastChannels)+" channels per broadcast")
	}
	for _, ch := range chs {
		if err := checkChannelName(ch); err != nil {
			return 0, err
		}
	}
	total, done := 0, 0
	for i, ch := range chs {
		if slices.Contains(chs[:i], ch) {
			continue // a channel listed twice is published to once
		}
		res, err := s.publish(ctx, publishRequest{Channel: ch, Data: data, Event: event})
		var ae *apiError
		if err != nil && done > 0 && errors.As(err, &ae) {
			// Not "nothing was done": a retry publishes these again.
			what := fmt.Sprintf("%q and the channels after it were not published: %s", ch, ae.code)
			if errors.Is(err, broker.ErrOutcomeUnknown) {
				what = fmt.Sprintf("the broker did not answer for %q (it may have been published), and the channels after it were not published", ch)
			}
			return total, &apiError{status: ae.status, code: ae.code, msg: fmt.Sprintf(
				"published to the first %d channels listed (up to %q); %s", done, chs[i-1], what)}
		}
		if err != nil {
			return total, err
		}
		total += res.Delivered
		done++
	}
	return total, nil
}

func (s *Server) apiBroadcast(r *http.Request) (any, error) {
	var req broadcastRequest
	if err := decodeBody(r, s.bodyLimit(), &req); err != nil {
		return nil, err
	}
	n, err := s.broadcast(r.Context(), req.Channels, req.Data, req.Event)
	if err != nil {
		return nil, err
	}
	return deliveredResponse{OK: true, Delivered: n}, nil
}

type sendRequest struct {
	UserID  string          `json:"userId"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// sendToUser delivers to every live connection of a user, subscribed or not.
func (s *Server) sendToUser(ctx context.Context, user, ch string, data json.RawMessage) (int, error) {
	if user == "" {
		return 0, badRequest(protocol.CodeBadRequest, `"userId" is required`)
	}
	if err := checkChannelName(ch); err != nil {
		return 0, err
	}
	if int64(len(data)) > s.cfg.MaxMessageBytes {
		return 0, &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", msg: "data larger than max-message-bytes"}
	}
	m := protocol.Message{Channel: ch, Data: data, Time: time.Now()}
	if err := s.tellNodes(ctx, noteSend, nodeNote{User: user, Channel: ch, Data: data, Time: m.Time.UnixMicro()}); err != nil {
		return 0, err
	}
	n := s.hub.SendToUser(user, s.hub.Publication(m))
	s.metrics.Publications.WithLabelValues("api").Inc()
	return n, nil
}

func (s *Server) apiSend(r *http.Request) (any, error) {
	var req sendRequest
	if err := decodeBody(r, s.bodyLimit(), &req); err != nil {
		return nil, err
	}
	n, err := s.sendToUser(r.Context(), req.UserID, req.Channel, req.Data)
	if err != nil {
		return nil, err
	}
	return deliveredResponse{OK: true, Delivered: n}, nil
}

type disconnectRequest struct {
	UserID   string `json:"userId"`
	ClientID string `json:"clientId"`
}

func (s *Server) disconnect(ctx context.Context, req disconnectRequest) (int, error) {
	switch {
	case req.UserID != "" && req.ClientID != "":
		return 0, badRequest(protocol.CodeBadRequest, `give "userId" or "clientId", not both`)
	case req.UserID != "" || req.ClientID != "":
		// This node's connections first, Redis or not: cutting a user off
		// must not wait for the broker.
		n := s.disconnectLocal(req.UserID, req.ClientID)
		if err := s.tellNodes(ctx, noteDisconnect, nodeNote{User: req.UserID, Client: req.ClientID}); err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				return n, &apiError{status: ae.status, code: ae.code, msg: fmt.Sprintf("disconnected %d connection(s) on this node; the other nodes were not told: %s", n, ae.msg)}
			}
			return n, err
		}
		return n, nil
	}
	return 0, badRequest(protocol.CodeBadRequest, `"userId" or "clientId" is required`)
}

func (s *Server) apiDisconnect(r *http.Request) (any, error) {
	var req disconnectRequest
	if err := decodeBody(r, 64<<10, &req); err != nil {
		return nil, err
	}
	n, err := s.disconnect(r.Context(), req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ok": true, "disconnected": n}, nil
}

type batchCommand struct {
	Method         string          `json:"method"`
	Channel        string          `json:"channel"`
	Channels       []string        `json:"channels"`
	UserID         string          `json:"userId"`
	ClientID       string          `json:"clientId"`
	Data           json.RawMessage `json:"data"`
	Event          string          `json:"event"`
	IdempotencyKey string          `json:"idempotencyKey"`
}

type batchResult struct {
	OK           bool    `json:"ok"`
	Delivered    *int    `json:"delivered,omitempty"`
	Disconnected *int    `json:"disconnected,omitempty"`
	Offset       *uint64 `json:"offset,omitempty"`
	Epoch        string  `json:"epoch,omitempty"`
	Duplicate    bool    `json:"duplicate,omitempty"`
	Error        string  `json:"error,omitempty"`
	Message      string  `json:"message,omitempty"`
}

// apiBatch runs commands in order; one failing command does not stop the
// others, and each gets its own result.
func (s *Server) apiBatch(r *http.Request) (any, error) {
	var req struct {
		Commands []batchCommand `json:"commands"`
	}
	if err := decodeBody(r, 16*s.bodyLimit(), &req); err != nil {
		return nil, err
	}
	if len(req.Commands) == 0 {
		return nil, badRequest(protocol.CodeBadRequest, `"commands" must hold at least one command`)
	}
	if len(req.Commands) > maxBatchCommands {
		return nil, badRequest(protocol.CodeBadRequest, "at most "+strconv.Itoa(maxBatchCommands)+" commands per batch")
	}
	results := make([]batchResult, len(req.Commands))
	for i, c := range req.Commands {
		var n int
		var err error
		field := &results[i].Delivered
		switch c.Method {
		case "publish":
			var res publishResponse
			res, err = s.publish(r.Context(), publishRequest{Channel: c.Channel, Data: c.Data, Event: c.Event, IdempotencyKey: c.IdempotencyKey})
			if err == nil {
				n = res.Delivered
				results[i].Offset, results[i].Epoch, results[i].Duplicate = &res.Offset, res.Epoch, res.Duplicate
			}
		case "broadcast":
			if c.IdempotencyKey != "" {
				err = badRequest(protocol.CodeBadRequest, "idempotencyKey applies to publish only")
				break
			}
			n, err = s.broadcast(r.Context(), c.Channels, c.Data, c.Event)
		case "send":
			n, err = s.sendToUser(r.Context(), c.UserID, c.Channel, c.Data)
		case "disconnect":
			n, err = s.disconnect(r.Context(), disconnectRequest{UserID: c.UserID, ClientID: c.ClientID})
			field = &results[i].Disconnected
		default:
			err = badRequest(protocol.CodeBadRequest, "unknown method; expected publish, broadcast, send or disconnect")
		}
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				results[i].Error, results[i].Message = ae.code, ae.msg
			} else {
				results[i].Error, results[i].Message = string(protocol.CodeInternal), "internal error"
			}
			continue
		}
		results[i].OK = true
		*field = &n
	}
	return map[string]any{"ok": true, "results": results}, nil
}

// StatsData is what /api/stats reports.
type StatsData struct {
	OK            bool    `json:"ok"`
	Clients       int     `json:"clients"`
	Users         int     `json:"users"`
	Subscriptions int     `json:"subscriptions"`
	Channels      int     `json:"channels"`
	UptimeSeconds float64 `json:"uptimeSeconds"`
}

// Stats returns the numbers behind /api/stats.
func (s *Server) Stats() StatsData {
	st := s.hub.Stats(false)
	return StatsData{OK: true, Clients: st.Clients, Users: st.Users, Subscriptions: st.Subscriptions,
		Channels: st.NumChannels, UptimeSeconds: time.Since(s.started).Seconds()}
}

func (s *Server) apiStats(*http.Request) (any, error) { return s.Stats(), nil }

// PresenceData is what /api/presence and the presence command report.
type PresenceData struct {
	Type       string             `json:"type,omitempty"`
	OK         bool               `json:"ok,omitempty"`
	Channel    string             `json:"channel"`
	NumClients int                `json:"numClients"`
	NumUsers   int                `json:"numUsers"`
	Clients    []hub.PresenceInfo `json:"clients"`
	// Truncated: the list was cut to fit one reply (numClients and numUsers
	// still count everyone).
	Truncated bool            `json:"truncated,omitempty"`
	ID        json.RawMessage `json:"id,omitempty"`
}

// presence returns who is on channel on this node.
func (s *Server) presence(channel string) PresenceData {
	clients := s.hub.Presence(channel)
	if clients == nil {
		clients = []hub.PresenceInfo{}
	}
	users := make(map[string]struct{}, len(clients))
	for _, c := range clients {
		users[c.UserID] = struct{}{}
	}
	return PresenceData{Channel: channel, NumClients: len(clients), NumUsers: len(users), Clients: clients}
}

func (s *Server) apiPresence(r *http.Request) (any, error) {
	ch := r.URL.Query().Get("channel")
	if err := checkChannelName(ch); err != nil {
		return nil, err
	}
	p := s.presence(ch)
	p.OK = true
	return p, nil
}

// HistoryData is what /api/history reports.
type HistoryData struct {
	OK           bool              `json:"ok"`
	Channel      string            `json:"channel"`
	Offset       uint64            `json:"offset"`
	Epoch        string            `json:"epoch"`
	Publications []json.RawMessage `json:"publications"`
	// Truncated: publications were left out to keep the answer within 16
	// MiB (see maxReplayBytes); with since, ask again from the last offset.
	Truncated bool `json:"truncated,omitempty"`
}

// apiHistory serves GET /api/history?channel=&since=&epoch=&limit=. since is
// an offset (in epoch, by default the current one) or an RFC 3339 time; with
// it the publications after it come oldest first, without it the newest limit.
func (s *Server) apiHistory(r *http.Request) (any, error) {
	q := r.URL.Query()
	ch := q.Get("channel")
	if err := checkChannelName(ch); err != nil {
		return nil, err
	}
	limit := protocol.MaxHistoryLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, badRequest(protocol.CodeBadRequest, "limit must be a non-negative integer")
		}
		if n > 0 && n < limit {
			limit = n
		}
	}
	hq := broker.HistoryQuery{Limit: limit}
	if v := q.Get("since"); v != "" {
		if off, err := strconv.ParseUint(v, 10, 64); err == nil {
			epoch := q.Get("epoch")
			if epoch == "" {
				_, pos, err := s.broker.History(r.Context(), ch, broker.HistoryQuery{Limit: 1})
				if err != nil {
					return nil, err
				}
				epoch = pos.Epoch
			}
			hq.Since = &broker.Since{Offset: off, Epoch: epoch}
		} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			hq.Since = &broker.Since{Time: t}
		} else {
			return nil, badRequest(protocol.CodeBadRequest, "since must be an offset or an RFC 3339 time")
		}
	}
	pubs, pos, err := s.broker.History(r.Context(), ch, hq)
	if err != nil {
		return nil, err
	}
	pubs, truncated := fitHistory(pubs, s.maxReplayBytes(), hq.Since == nil)
	out := HistoryData{OK: true, Channel: ch, Offset: pos.Offset, Epoch: pos.Epoch, Publications: make([]json.RawMessage, len(pubs)), Truncated: truncated}
	for i := range pubs {
		m := message(ch, &pubs[i])
		out.Publications[i] = protocol.AppendPublication(nil, &m)
	}
	return out, nil
}

func (s *Server) apiChannels(*http.Request) (any, error) {
	return map[string]any{"ok": true, "channels": s.hub.Stats(true).Channels}, nil
}

// handleCall serves the seed's admin handlers on POST /call, answering
// {"ok":true,"data":…} or {"ok":false,"error":…}.
func (s *Server) handleCall(w http.ResponseWriter, r *http.Request) {
	status := http.StatusOK
	defer func() { s.metrics.APIRequests.WithLabelValues("call", strconv.Itoa(status)).Inc() }()
	fail := func(st int, msg string) {
		status = st
		writeJSON(w, st, map[string]any{"ok": false, "error": msg})
	}
	if e := s.authorizeAPI(r); e != nil {
		fail(e.status, e.msg)
		return
	}
	var req struct {
		Key    string          `json:"key"`
		Params json.RawMessage `json:"params"`
	}
	if err := decodeBody(r, s.bodyLimit(), &req); err != nil {
		var ae *apiError
		errors.As(err, &ae)
		fail(ae.status, ae.msg)
		return
	}
	params := func(v any) bool {
		if len(req.Params) == 0 || string(req.Params) == "null" {
			fail(http.StatusBadRequest, `"params" is required`)
			return false
		}
		if err := decodeJSON(req.Params, v, "params"); err != nil {
			fail(http.StatusBadRequest, "params: "+err.(*apiError).msg)
			return false
		}
		return true
	}
	var data any
	var err error
	switch req.Key {
	case "websocket.stats":
		st := s.hub.Stats(true)
		data = map[string]any{"enabled": true, "activeClients": st.Clients, "channels": st.Channels}
	case "websocket.broadcast":
		var p publishRequest
		if !params(&p) {
			return
		}
		var res publishResponse
		res, err = s.publish(r.Context(), p)
		d := map[string]any{"channel": p.Channel, "delivered": res.Delivered, "offset": res.Offset, "epoch": res.Epoch}
		if res.Duplicate { // an idempotencyKey seen before: nothing was published
			d["duplicate"] = true
		}
		data = d
	case "websocket.send":
		var p sendRequest
		if !params(&p) {
			return
		}
		var n int
		n, err = s.sendToUser(r.Context(), p.UserID, p.Channel, p.Data)
		data = map[string]any{"userId": p.UserID, "channel": p.Channel, "delivered": n}
	default:
		fail(http.StatusBadRequest, "unknown handler: "+strconv.Quote(req.Key))
		return
	}
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			fail(ae.status, ae.msg)
		} else {
			fail(http.StatusInternalServerError, "internal error")
		}
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "data": data})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody(code, msg))
}

// errorBody is the JSON body of every error response.
func errorBody(code, msg string) map[string]any {
	return map[string]any{"ok": false, "error": code, "message": msg}
}

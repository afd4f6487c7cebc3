package redisbroker

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/herald-rt/herald/internal/broker"
)

// field writes s as LENGTH ":" s, the framing of every field the scripts
// and the pub/sub messages carry (as the scripts' Lua field does).
func field(s string) string { return strconv.Itoa(len(s)) + ":" + s }

// cut reads one field from the front of s.
func cut(s string) (f, rest string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || i > 10 {
		return "", "", false
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil || n < 0 || n > len(s)-i-1 {
		return "", "", false
	}
	return s[i+1 : i+1+n], s[i+1+n:], true
}

var errMalformed = errors.New("redis broker: malformed stored publication")

// encodeBody is what history and pub/sub keep of a publication besides its
// offset, time and origin: event, publisher, then the data to the end.
func encodeBody(p *broker.Publication) string {
	return field(p.Event) + field(p.From) + string(p.Data)
}

func decodeBody(s string, p *broker.Publication) error {
	ev, rest, ok := cut(s)
	from, data, ok2 := cut(rest)
	if !ok || !ok2 {
		return errMalformed
	}
	p.Event, p.From = ev, from
	if data != "" {
		p.Data = json.RawMessage(data)
	}
	return nil
}

// decodeEntry reads a history entry: "TIME_US:OFFSET:BODY".
func decodeEntry(s string) (broker.Publication, error) {
	var p broker.Publication
	ts, rest, ok := strings.Cut(s, ":")
	off, body, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return p, errMalformed
	}
	var err error
	if p.Offset, err = strconv.ParseUint(off, 10, 64); err != nil {
		return p, errMalformed
	}
	if p.Time = micros(ts); p.Time.IsZero() {
		return p, errMalformed
	}
	return p, decodeBody(body, &p)
}

// decodeMessage reads a pub/sub publication (after its "p"): channel,
// epoch, offset, time, origin, body.
func decodeMessage(s string) (string, broker.Publication, error) {
	var p broker.Publication
	var f [5]string
	rest := s
	for i := range f {
		var ok bool
		if f[i], rest, ok = cut(rest); !ok {
			return "", p, errMalformed
		}
	}
	var err error
	if p.Offset, err = strconv.ParseUint(f[2], 10, 64); err != nil {
		return "", p, errMalformed
	}
	if p.Time = micros(f[3]); p.Time.IsZero() {
		return "", p, errMalformed
	}
	p.Epoch, p.Origin = f[1], f[4]
	return f[0], p, decodeBody(rest, &p)
}

package transport

import (
	"net/url"
	"strings"
)

// OriginAllowed applies --allowed-origins (allowed) to a request's Origin
// header, the same way for every transport: a request without Origin
// (a non-browser client) passes; with no origins configured, the Origin's
// host must be the request's own Host; "*" allows any origin; otherwise the
// Origin must equal one of allowed, ignoring case.
func OriginAllowed(allowed []string, origin, host string) bool {
	if origin == "" {
		return true
	}
	if len(allowed) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, host)
	}
	for _, o := range allowed {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

package httpx

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/challfn/challfn/shared/apierr"
)

// Route is one REST route of a function: a path pattern and its methods.
type Route struct {
	// Prefix is the fixed part of the path (`/api/v1/instance`).
	Prefix string
	// Params is the number of path parameters after Prefix.
	Params int
	// Methods maps an HTTP method to its handler; the parameters are the
	// unescaped path parameters in order.
	Methods map[string]func(w http.ResponseWriter, r *http.Request, params []string)
}

// Router dispatches requests to routes the way grpc-gateway does for the
// contract (docs/contract.md §1.1): a path matching no route is a 404 `Not Found`, a known
// path with another method is a 501 `Method Not Allowed`. Path parameters are
// single segments: a trailing slash, an empty segment or an escaped `/`
// (`%2F`) in a parameter matches nothing.
//
// The matched route is recorded in the request's Pattern ("/api/v1/instance/{}/{}")
// for the telemetry middleware around the router, which names server spans
// and the http.route attribute after it (a path with ids would make one
// series per instance).
func Router(routes ...Route) http.Handler {
	patterns := make([]string, len(routes))
	for i, rt := range routes {
		patterns[i] = rt.Prefix + strings.Repeat("/{}", rt.Params)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i, rt := range routes {
			params, ok := match(r.URL.EscapedPath(), rt.Prefix, rt.Params)
			if !ok {
				continue
			}
			r.Pattern = patterns[i]
			h := rt.Methods[r.Method]
			if h == nil {
				apierr.Write(w, apierr.MethodNotAllowed())
				return
			}
			h(w, r, params)
			return
		}
		apierr.Write(w, apierr.RouteNotFound())
	})
}

func match(escaped, prefix string, n int) ([]string, bool) {
	rest, ok := strings.CutPrefix(escaped, prefix)
	if !ok {
		return nil, false
	}
	if n == 0 {
		return nil, rest == ""
	}
	rest, ok = strings.CutPrefix(rest, "/")
	if !ok {
		return nil, false
	}
	raw := strings.Split(rest, "/")
	if len(raw) != n {
		return nil, false
	}
	params := make([]string, n)
	for i, seg := range raw {
		p, err := url.PathUnescape(seg)
		if err != nil || p == "" || strings.Contains(p, "/") {
			return nil, false
		}
		params[i] = p
	}
	return params, true
}

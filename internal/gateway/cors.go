package gateway

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"weir.dev/weir/internal/model"
)

// CORS (the HTTPRoute CORS filter), as Gateway API's HTTPRouteCORS conformance test
// and the Fetch standard's CORS protocol ask:
//
//   - a preflight (OPTIONS with Origin and Access-Control-Request-Method) is always
//     answered by the gateway, never forwarded: 204 with the CORS headers when the
//     origin is allowed, 204 without any when it is not (the browser then refuses the
//     request);
//   - an allowed origin is echoed, or "*" when every origin is allowed without
//     credentials; "*" in allowMethods or allowHeaders echoes what the preflight asks
//     for (a literal "*" means nothing to a browser when credentials are allowed);
//     exposeHeaders, allowCredentials (only when true) and maxAge go on preflights too;
//   - any other request with an allowed Origin is forwarded and its response gets
//     Access-Control-Allow-Origin, -Allow-Credentials and -Expose-Headers; one from an
//     origin not allowed is forwarded untouched.

// corsRequest applies the CORS filter c to a request; it returns true when it answered
// it (a preflight). An allowed origin is recorded in st for the response.
func corsRequest(w http.ResponseWriter, r *http.Request, c *model.CORS, st *reqState) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	allowed := corsAllowed(c, origin)
	if allowed {
		st.origin = origin
	}
	reqMethod := r.Header.Get("Access-Control-Request-Method")
	if r.Method != http.MethodOptions || reqMethod == "" {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if allowed {
		corsPreflight(h, c, origin, reqMethod, r.Header.Values("Access-Control-Request-Headers"))
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

func corsAllowed(c *model.CORS, origin string) bool {
	for _, o := range c.AllowOrigins {
		if o == "*" || o == origin {
			return true
		}
		if i := strings.Index(o, "://*."); i > 0 {
			scheme, suffix := o[:i+3], o[i+4:]
			if strings.HasPrefix(origin, scheme) && strings.HasSuffix(origin, suffix) && len(origin) > len(scheme)+len(suffix) {
				return true
			}
		}
	}
	return false
}

// corsOrigin is the Access-Control-Allow-Origin for an allowed origin.
func corsOrigin(c *model.CORS, origin string) string {
	if !c.AllowCredentials && len(c.AllowOrigins) == 1 && c.AllowOrigins[0] == "*" {
		return "*"
	}
	return origin
}

// corsPreflight sets the headers of the answer to an allowed preflight.
func corsPreflight(h http.Header, c *model.CORS, origin, reqMethod string, reqHeaders []string) {
	h.Set("Access-Control-Allow-Origin", corsOrigin(c, origin))
	switch {
	case slices.Contains(c.AllowMethods, "*"):
		h.Set("Access-Control-Allow-Methods", reqMethod)
		h.Add("Vary", "Access-Control-Request-Method")
	case len(c.AllowMethods) > 0:
		h.Set("Access-Control-Allow-Methods", strings.Join(c.AllowMethods, ", "))
	}
	switch {
	case slices.Contains(c.AllowHeaders, "*"):
		if len(reqHeaders) > 0 {
			h.Set("Access-Control-Allow-Headers", strings.Join(reqHeaders, ", "))
		}
		h.Add("Vary", "Access-Control-Request-Headers")
	case len(c.AllowHeaders) > 0:
		h.Set("Access-Control-Allow-Headers", strings.Join(c.AllowHeaders, ", "))
	}
	if len(c.ExposeHeaders) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(c.ExposeHeaders, ", "))
	}
	if c.AllowCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	h.Set("Access-Control-Max-Age", strconv.Itoa(int(c.MaxAge)))
}

// corsResponse sets the CORS headers of a forwarded request's response (origin is
// allowed).
func corsResponse(h http.Header, c *model.CORS, origin string) {
	h.Set("Access-Control-Allow-Origin", corsOrigin(c, origin))
	h.Add("Vary", "Origin")
	if c.AllowCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if len(c.ExposeHeaders) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(c.ExposeHeaders, ", "))
	}
}

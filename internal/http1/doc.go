// Package http1 is weir's HTTP/1.1 codec: it finds and parses request and response
// heads, follows chunked framing and serializes heads, without the allocations of
// net/http's reader and writer. Its rule is net/http's: what it parses reads as
// http.ReadRequest, http.ReadResponse and httputil.NewChunkedReader read it, and
// whatever it does not take (or takes differently) it reports, so that the caller
// leaves it to net/http or refuses it. The fuzz targets of this package compare it
// with those parsers.
package http1

package gateway

import (
	"context"
	"errors"
	"net/http/httptrace"
	"net/textproto"

	"weir.dev/weir/internal/http1"
)

var errTooManyInformational = errors.New("too many informational responses")

// limitInformational bounds the informational (1xx) responses a backend may send before
// its final one on the net/http path, as the event loops bound them
// (http1.MaxInformational): httputil.ReverseProxy relays each (its own trace, added
// later, runs first), and the one past the bound fails the try. http.Transport itself
// leaves the count to whoever receives them.
func limitInformational(ctx context.Context) context.Context {
	n := 0
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error {
			if n++; n > http1.MaxInformational {
				return errTooManyInformational
			}
			return nil
		},
	})
}

package gateway

import (
	"strconv"
	"testing"
)

func TestPlainQuoted(t *testing.T) {
	for _, s := range []string{"", "example.com", "h:8080", "[::1]:80", `a"b`, `a\b`, "a\tb", "bücher", "a\x7fb"} {
		// plainQuoted may say no to a string Quote leaves as is (non-ASCII), never
		// the other way round.
		if plainQuoted(s) && strconv.Quote(s) != `"`+s+`"` {
			t.Errorf("plainQuoted(%q) = true, but strconv.Quote gives %s", s, strconv.Quote(s))
		}
	}
}

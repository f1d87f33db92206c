package http1

import "errors"

// ChunkScanner follows a chunked body (RFC 9112, section 7.1) as it is relayed
// unchanged, to find where it ends: chunk sizes, extensions, data, the last chunk and
// the trailer section. It takes what net/http's chunked reader and trailer reader take
// (httputil.NewChunkedReader, then http.Response.Body's trailer read), with the same
// limits, and refuses a little more (see the fuzz target FuzzChunked):
//   - a chunk size over 2^62 (net/http takes up to 16 hex digits);
//   - a trailer line that ends in a bare LF, is folded (obs-fold) or has a name that is
//     not a token (net/http's textproto reader takes those).
//
// A body it takes ends exactly where net/http's reader ends it.
type ChunkScanner struct {
	state   uint8
	size    int64
	digits  int
	line    int   // length of the chunk-size line or trailer section so far
	excess  int64 // non-data bytes beyond what net/http allows for, as its reader counts them
	trailer int   // length of the trailer section so far
}

const (
	chunkSize uint8 = iota
	chunkExt
	chunkSizeOWS
	chunkSizeLF
	chunkData
	chunkDataCR
	chunkDataLF
	chunkTrailerStart
	chunkTrailerName
	chunkTrailerValue
	chunkTrailerLF
	chunkEndLF
)

const (
	maxChunkLine    = 4096 - 2  // a chunk-size line without its CRLF, as net/http's 4 KiB read buffer holds it
	maxChunkExcess  = 16 << 10  // non-data bytes net/http's chunked reader tolerates
	maxTrailerBytes = 4096      // the trailer section, its last CRLF included
	maxChunkSize    = 1<<62 - 1 // larger sizes are refused
)

// ErrBadChunk reports a malformed chunked body.
var ErrBadChunk = errors.New("malformed chunked body")

// Scan consumes p and returns how many of its bytes belong to the body and whether
// the body ended there.
func (s *ChunkScanner) Scan(p []byte) (n int, end bool, err error) {
	for n < len(p) {
		ch := p[n]
		switch s.state {
		case chunkSize:
			s.line++
			switch {
			case ch == '\r' && s.digits > 0:
				s.state = chunkSizeLF
			case ch == ';' && s.digits > 0:
				s.state = chunkExt
			case (ch == ' ' || ch == '\t') && s.digits > 0:
				s.state = chunkSizeOWS
			default:
				v, ok := unhex(ch)
				if !ok || s.digits == 16 || s.size > maxChunkSize>>4 {
					return n, false, ErrBadChunk
				}
				s.size = s.size<<4 | int64(v)
				s.digits++
			}
		case chunkExt:
			// An extension is anything up to the CR (net/http drops it unread).
			s.line++
			switch ch {
			case '\r':
				s.state = chunkSizeLF
			case '\n':
				return n, false, ErrBadChunk
			}
		case chunkSizeOWS:
			// Whitespace after the size ends the line (net/http trims it; a ';'
			// after it leaves a size with a space in it, which it refuses).
			s.line++
			switch ch {
			case '\r':
				s.state = chunkSizeLF
			case ' ', '\t':
			default:
				return n, false, ErrBadChunk
			}
		case chunkSizeLF:
			line := s.line - 1 // without the CR
			if ch != '\n' || line > maxChunkLine {
				return n, false, ErrBadChunk
			}
			s.excess += int64(line) + 2 - 16 - 2*s.size
			if s.excess < 0 {
				s.excess = 0
			}
			if s.excess > maxChunkExcess {
				return n, false, ErrBadChunk
			}
			s.line = 0
			if s.size == 0 {
				s.state = chunkTrailerStart
			} else {
				s.state = chunkData
			}
		case chunkData:
			take := min(int64(len(p)-n), s.size)
			s.size -= take
			n += int(take)
			if s.size == 0 {
				s.state = chunkDataCR
			}
			continue
		case chunkDataCR:
			if ch != '\r' {
				return n, false, ErrBadChunk
			}
			s.state = chunkDataLF
		case chunkDataLF:
			if ch != '\n' {
				return n, false, ErrBadChunk
			}
			s.state, s.size, s.digits = chunkSize, 0, 0
		case chunkTrailerStart, chunkTrailerName, chunkTrailerValue, chunkTrailerLF, chunkEndLF:
			s.trailer++
			if s.trailer > maxTrailerBytes {
				return n, false, ErrBadChunk
			}
			switch s.state {
			case chunkTrailerStart:
				if ch == '\r' {
					s.state = chunkEndLF
				} else if validTokenByte(ch) {
					s.state = chunkTrailerName
				} else {
					return n, false, ErrBadChunk
				}
			case chunkTrailerName:
				if ch == ':' {
					s.state = chunkTrailerValue
				} else if !validTokenByte(ch) {
					return n, false, ErrBadChunk
				}
			case chunkTrailerValue:
				if ch == '\r' {
					s.state = chunkTrailerLF
				} else if (ch < ' ' && ch != '\t') || ch == 0x7f {
					return n, false, ErrBadChunk
				}
			case chunkTrailerLF:
				if ch != '\n' {
					return n, false, ErrBadChunk
				}
				s.state = chunkTrailerStart
			case chunkEndLF:
				if ch != '\n' {
					return n, false, ErrBadChunk
				}
				return n + 1, true, nil
			}
		}
		n++
	}
	return n, false, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

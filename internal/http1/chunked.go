package http1

import "errors"

// ChunkScanner follows a chunked body (RFC 9112, section 7.1) as it is relayed
// unchanged, to find where it ends: chunk sizes, extensions, data, the last chunk and
// the trailer section.
type ChunkScanner struct {
	state  uint8
	size   int64
	digits int
	ext    int
}

const (
	chunkSize uint8 = iota
	chunkExt
	chunkSizeLF
	chunkData
	chunkDataCR
	chunkDataLF
	chunkTrailerStart
	chunkTrailerLine
	chunkEndLF
)

var ErrBadChunk = errors.New("malformed chunked body")

// Scan consumes p and returns how many of its bytes belong to the body and whether
// the body ended there.
func (s *ChunkScanner) Scan(p []byte) (n int, end bool, err error) {
	for n < len(p) {
		ch := p[n]
		switch s.state {
		case chunkSize:
			switch {
			case ch == '\r' && s.digits > 0:
				s.state = chunkSizeLF
			case (ch == ';' || ch == ' ' || ch == '\t') && s.digits > 0:
				s.state = chunkExt
			default:
				v, ok := unhex(ch)
				if !ok || s.digits == 15 {
					return n, false, ErrBadChunk
				}
				s.size = s.size<<4 | int64(v)
				s.digits++
			}
		case chunkExt:
			s.ext++
			if ch == '\r' {
				s.state = chunkSizeLF
			} else if s.ext > 4096 {
				return n, false, ErrBadChunk
			}
		case chunkSizeLF:
			if ch != '\n' {
				return n, false, ErrBadChunk
			}
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
			s.state, s.size, s.digits, s.ext = chunkSize, 0, 0, 0
		case chunkTrailerStart:
			if ch == '\r' {
				s.state = chunkEndLF
			} else {
				s.state = chunkTrailerLine
			}
		case chunkTrailerLine:
			if ch == '\n' {
				s.state = chunkTrailerStart
			}
		case chunkEndLF:
			if ch != '\n' {
				return n, false, ErrBadChunk
			}
			return n + 1, true, nil
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

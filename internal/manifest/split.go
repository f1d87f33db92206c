package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// chunk is a run of a file's lines holding one YAML document (rarely more: a document
// ended by "..." and followed by another without "---"). Files are cut into chunks at
// "---" lines so that a document of a kind weir skips is counted from its apiVersion and
// kind lines and never parsed: a large ConfigMap or CRD costs its bytes, not a node
// tree ten times their size.
type chunk struct {
	start, end int // byte offsets in the file
	line       int // lines before the chunk: added to the parser's line numbers
}

// splitChunks cuts data at every line that is a YAML document marker ("---" alone or
// followed by a space). What comes before the first marker joins the first document
// when it holds only comments, blank lines and directives, as the YAML parser reads it.
func splitChunks(data []byte) []chunk {
	var chunks []chunk
	cur := chunk{}
	line := 0
	for off := 0; off < len(data); {
		end := bytes.IndexByte(data[off:], '\n')
		next := len(data)
		if end >= 0 {
			next = off + end + 1
		}
		if isDocumentMarker(data[off:next]) && off > cur.start && !onlyPreamble(data[cur.start:off]) {
			cur.end = off
			chunks = append(chunks, cur)
			cur = chunk{start: off, line: line}
		}
		line++
		off = next
	}
	cur.end = len(data)
	return append(chunks, cur)
}

func isDocumentMarker(l []byte) bool {
	if !bytes.HasPrefix(l, []byte("---")) {
		return false
	}
	return len(l) == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\n' || l[3] == '\r'
}

// skippable reports whether a document of this apiVersion and kind is one Load skips
// (a kind weir does not use, in a group that is not misspelt), and counts it if so.
func (l *loader) skippable(apiVersion, kind string) bool {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil || strings.HasSuffix(kind, "List") {
		return false
	}
	gk := gv.WithKind(kind).GroupKind()
	if _, used := supportedVersions[gk]; used {
		return false
	}
	if _, unknown := unknownKind(gk); unknown {
		return false
	}
	l.report.Skipped[skipName(gk)]++
	return true
}

// onlyPreamble reports whether b holds nothing the parser would make a document of.
func onlyPreamble(b []byte) bool {
	for l := range bytes.Lines(b) {
		t := bytes.TrimSpace(l)
		if len(t) > 0 && t[0] != '#' && t[0] != '%' {
			return false
		}
	}
	return true
}

// parseChunk parses the chunk's documents, with line numbers of the whole file. Empty
// documents are kept (as nil) so that indices are stable from one parse to the next.
func parseChunk(data []byte, c chunk) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data[c.start:c.end]))
	var roots []*yaml.Node
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return roots, nil
		}
		if err != nil {
			return roots, err
		}
		var root *yaml.Node
		if len(doc.Content) > 0 {
			shiftLines(&doc, c.line, map[*yaml.Node]bool{})
			root = doc.Content[0]
		}
		roots = append(roots, root)
	}
}

// shiftLines adds off to the line of every node (each once: aliases share nodes).
func shiftLines(n *yaml.Node, off int, seen map[*yaml.Node]bool) {
	if off == 0 || seen[n] {
		return
	}
	seen[n] = true
	n.Line += off
	for _, c := range n.Content {
		shiftLines(c, off, seen)
	}
}

// sniff finds a chunk's apiVersion and kind without parsing it, when the document is a
// plain block mapping with both keys written once as plain or quoted scalars at the top
// level (or a JSON object with both as top-level string members). ok is false whenever
// it is not that simple; the chunk is then parsed.
func sniff(b []byte) (apiVersion, kind string, ok bool) {
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) > 0 && t[0] == '{' {
		return sniffJSON(t)
	}
	var av, k int // times seen
	for l := range bytes.Lines(b) {
		l = bytes.TrimRight(l, "\r\n")
		if len(l) == 0 || l[0] == ' ' || l[0] == '\t' || l[0] == '#' || l[0] == '%' {
			continue // nested content, comments, directives
		}
		if isDocumentMarker(l) {
			if rest := strings.TrimSpace(string(l[3:])); rest != "" && rest[0] != '#' {
				return "", "", false // content on the marker line
			}
			continue
		}
		s := string(l)
		key, value, found := strings.Cut(s, ":")
		if !found || !isPlainKey(key) {
			return "", "", false // "...", flow or complex keys, lists, anchors, tags
		}
		switch key {
		case "apiVersion":
			av++
			apiVersion, ok = scalarValue(value)
		case "kind":
			k++
			kind, ok = scalarValue(value)
		case "<<":
			return "", "", false // a merge key may bring apiVersion or kind
		default:
			continue
		}
		if !ok {
			return "", "", false
		}
	}
	return apiVersion, kind, av == 1 && k == 1
}

func isPlainKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' || r == '/' || r == '<') {
			return false
		}
	}
	return true
}

// scalarValue reads a one-line plain or quoted scalar without escapes.
func scalarValue(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		v = v[1 : len(v)-1]
		if strings.ContainsAny(v, `"'\`) {
			return "", false
		}
		return v, v != ""
	}
	if v == "" || strings.ContainsAny(v[:1], "&*!|>{}[]\"'@`%#,?:-") || strings.ContainsAny(v, " \t") {
		return "", false
	}
	return v, true
}

// sniffJSON reads apiVersion and kind from a JSON object's top level, stepping over the
// other members' values token by token.
func sniffJSON(b []byte) (apiVersion, kind string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", "", false
	}
	var av, k int
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", "", false
		}
		key, _ := tok.(string)
		switch key {
		case "apiVersion", "kind":
			tok, err := dec.Token()
			s, isString := tok.(string)
			if err != nil || !isString {
				return "", "", false
			}
			if key == "kind" {
				kind, k = s, k+1
			} else {
				apiVersion, av = s, av+1
			}
		default:
			if !skipJSONValue(dec) {
				return "", "", false
			}
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return "", "", false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", "", false // more after the object: let the parser say what
	}
	return apiVersion, kind, av == 1 && k == 1 && apiVersion != "" && kind != ""
}

func skipJSONValue(dec *json.Decoder) bool {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if d, isDelim := tok.(json.Delim); isDelim {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
		if depth == 0 {
			return true
		}
	}
}

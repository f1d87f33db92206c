package manifest

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// document is one object's YAML (or JSON) as it sits in a file. To keep memory low
// with thousands of objects, the YAML node tree is dropped once the object is decoded;
// the line of a field is found only when an error needs it, by parsing the file again.
type document struct {
	file *sourceFile
	// chunk is the file chunk holding the document and index its position in it; item,
	// for objects inside a List, the item indices down from that document.
	chunk int
	index int
	item  []int
	line  int
	node  *yaml.Node // while decoding; nil afterwards
	lines map[string]int
	// present records, for the paths validation asks about (see written), whether
	// the manifest has them.
	present map[string]bool
	// dups lists mapping keys given twice (the JSON conversion would silently keep
	// the last one).
	dups []duplicate
}

// sourceFile is one manifest file's bytes, cut into chunks (see splitChunks); a chunk is
// parsed again when an error needs a line.
type sourceFile struct {
	name   string
	data   []byte
	chunks []chunk
	roots  map[int][]*yaml.Node
}

// documents parses the chunk's documents (again), keeping every root, empty ones too,
// so that indices match the first read.
func (f *sourceFile) documents(ci int) []*yaml.Node {
	if roots, ok := f.roots[ci]; ok {
		return roots
	}
	if f.roots == nil {
		f.roots = map[int][]*yaml.Node{}
	}
	roots, _ := parseChunk(f.data, f.chunks[ci]) // a syntax error was reported by the first read
	f.roots[ci] = roots
	return roots
}

// duplicate is a mapping key given twice, at the second one's line.
type duplicate struct {
	path string
	line int
}

// presenceQueries are the paths validation asks whether a manifest wrote (rather than
// a default filled in).
var presenceQueries = []string{"spec.clusterIPs", "spec.ipFamilies", "data", "stringData"}

func newDocument(file *sourceFile, chunk, index int, item []int, node *yaml.Node) *document {
	d := &document{file: file, chunk: chunk, index: index, item: item, line: node.Line, node: node, present: map[string]bool{}}
	d.findDuplicates("", node)
	for _, q := range presenceQueries {
		if lookup(node, q) != nil {
			d.present[q] = true
		}
	}
	return d
}

// lookup follows a dotted path of mapping keys.
func lookup(n *yaml.Node, path string) *yaml.Node {
	for _, key := range strings.Split(path, ".") {
		if n = mapValue(n, key); n == nil {
			return nil
		}
	}
	return n
}

func (d *document) findDuplicates(path string, n *yaml.Node) {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.MappingNode:
		pairs := mappingPairs(n)
		for i, kv := range pairs {
			p := joinKey(path, kv[0].Value)
			dup := false
			for _, prev := range pairs[:i] {
				if prev[0].Value == kv[0].Value {
					dup = true
					break
				}
			}
			if dup {
				d.dups = append(d.dups, duplicate{p, kv[0].Line})
				continue
			}
			d.findDuplicates(p, kv[1])
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			d.findDuplicates(fmt.Sprintf("%s[%d]", path, i), item)
		}
	}
}

// root is the document's node, parsed again from the file when it was dropped.
func (d *document) root() *yaml.Node {
	if d.node != nil {
		return d.node
	}
	roots := d.file.documents(d.chunk)
	if d.index >= len(roots) || roots[d.index] == nil {
		return nil
	}
	n := resolveAlias(roots[d.index])
	for _, i := range d.item {
		items := mapValue(n, "items")
		if items == nil || i >= len(items.Content) {
			return nil
		}
		n = resolveAlias(items.Content[i])
	}
	return n
}

func (d *document) indexLines() {
	d.lines = map[string]int{}
	var walk func(path string, n *yaml.Node)
	walk = func(path string, n *yaml.Node) {
		n = resolveAlias(n)
		switch n.Kind {
		case yaml.MappingNode:
			for _, kv := range mappingPairs(n) {
				p := joinKey(path, kv[0].Value)
				if _, seen := d.lines[p]; !seen {
					d.lines[p] = kv[0].Line
					walk(p, kv[1])
				}
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				d.lines[p] = item.Line
				walk(p, item)
			}
		}
	}
	if n := d.root(); n != nil {
		walk("", n)
	}
}

// lineOf is the line of the field at path, or of its nearest enclosing field that is
// in the file (a defaulted field is not), or the document's first line.
func (d *document) lineOf(path string) int {
	if path != "" && d.lines == nil {
		d.indexLines()
	}
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		path = parentPath(path)
	}
	return d.line
}

// findKind looks for the first field whose path, with list indices removed, is
// plainPath and whose YAML value has the given JSON kind ("string", "number", "bool",
// "array", "object"; "" matches any). It maps the JSON decoder's type errors, which
// carry no list indices, back to a real path.
func (d *document) findKind(plainPath, jsonKind string) (string, bool) {
	var found string
	var walk func(path, plain string, n *yaml.Node) bool
	walk = func(path, plain string, n *yaml.Node) bool {
		n = resolveAlias(n)
		if plain == plainPath && (jsonKind == "" || yamlJSONKind(n) == jsonKind) {
			found = path
			return true
		}
		switch n.Kind {
		case yaml.MappingNode:
			for _, kv := range mappingPairs(n) {
				if walk(joinKey(path, kv[0].Value), joinKey(plain, kv[0].Value), kv[1]) {
					return true
				}
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				if walk(fmt.Sprintf("%s[%d]", path, i), plain, item) {
					return true
				}
			}
		}
		return false
	}
	root := d.root()
	if root == nil {
		return "", false
	}
	ok := walk("", "", root)
	return found, ok
}

// findValue is the path of the first scalar whose value is v.
func (d *document) findValue(v string) (string, bool) {
	var walk func(path string, n *yaml.Node) (string, bool)
	walk = func(path string, n *yaml.Node) (string, bool) {
		n = resolveAlias(n)
		switch n.Kind {
		case yaml.ScalarNode:
			return path, n.Value == v
		case yaml.MappingNode:
			for _, kv := range mappingPairs(n) {
				if p, ok := walk(joinKey(path, kv[0].Value), kv[1]); ok {
					return p, true
				}
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				if p, ok := walk(fmt.Sprintf("%s[%d]", path, i), item); ok {
					return p, true
				}
			}
		}
		return "", false
	}
	root := d.root()
	if root == nil {
		return "", false
	}
	return walk("", root)
}

func yamlJSONKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "array"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "number"
		case "!!bool":
			return "bool"
		case "!!null":
			return "null"
		}
		return "string"
	}
	return ""
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// parentPath drops the last segment: "a.b[2]" → "a.b", "a.b" → "a".
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// mappingPairs lists a mapping's key/value pairs, with YAML merge keys (<<) expanded;
// explicit keys win over merged ones.
func mappingPairs(n *yaml.Node) [][2]*yaml.Node {
	var pairs, merged [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			v = resolveAlias(v)
			sources := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				sources = v.Content
			}
			for _, s := range sources {
				if s = resolveAlias(s); s.Kind == yaml.MappingNode {
					merged = append(merged, mappingPairs(s)...)
				}
			}
			continue
		}
		pairs = append(pairs, [2]*yaml.Node{k, v})
	}
	for _, m := range merged {
		dup := false
		for _, p := range pairs {
			if p[0].Value == m[0].Value {
				dup = true
				break
			}
		}
		if !dup {
			pairs = append(pairs, m)
		}
	}
	return pairs
}

// toJSON converts a YAML node to JSON as YAML 1.2 reads it: quoted scalars stay strings,
// timestamps stay as written, mapping keys are strings.
func toJSON(n *yaml.Node) ([]byte, error) {
	v, err := nodeValue(n)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func nodeValue(n *yaml.Node) (any, error) {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return nodeValue(n.Content[0])
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for _, kv := range mappingPairs(n) {
			v, err := nodeValue(kv[1])
			if err != nil {
				return nil, err
			}
			m[kv[0].Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for _, item := range n.Content {
			v, err := nodeValue(item)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str", "!!timestamp", "!!binary":
			return n.Value, nil
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, fmt.Errorf("line %d: %w", n.Line, err)
			}
			return b, nil
		case "!!int":
			var i int64
			if err := n.Decode(&i); err == nil {
				return i, nil
			}
			var u uint64
			if err := n.Decode(&u); err != nil {
				return nil, fmt.Errorf("line %d: %w", n.Line, err)
			}
			return u, nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, fmt.Errorf("line %d: %w", n.Line, err)
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, fmt.Errorf("line %d: %s is not a JSON number", n.Line, n.Value)
			}
			if f == math.Trunc(f) && math.Abs(f) < 1<<53 && !strings.ContainsAny(n.Value, ".eE") {
				return strconv.ParseInt(n.Value, 10, 64)
			}
			return f, nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		if t, ok := v.(time.Time); ok {
			return t.Format(time.RFC3339), nil
		}
		return v, nil
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}

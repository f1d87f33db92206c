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

// document is one object's YAML (or JSON) as it sits in a file: its start line and the
// line of every field, keyed by JSON path ("spec.ports[0].port").
type document struct {
	file  string
	line  int
	node  *yaml.Node
	lines map[string]int
	// dups lists the paths of mapping keys given twice (the JSON conversion would
	// silently keep the last one).
	dups []duplicate
}

// duplicate is a mapping key given twice, at the second one's line.
type duplicate struct {
	path string
	line int
}

func newDocument(file string, node *yaml.Node) *document {
	d := &document{file: file, line: node.Line, node: node, lines: map[string]int{}}
	d.index("", node)
	return d
}

func (d *document) index(path string, n *yaml.Node) {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.MappingNode:
		for _, kv := range mappingPairs(n) {
			p := joinKey(path, kv[0].Value)
			if _, seen := d.lines[p]; seen {
				d.dups = append(d.dups, duplicate{p, kv[0].Line})
				continue
			}
			d.lines[p] = kv[0].Line
			d.index(p, kv[1])
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			d.index(p, item)
		}
	}
}

// lineOf is the line of the field at path, or of its nearest enclosing field that is
// in the file (a defaulted field is not), or the document's first line.
func (d *document) lineOf(path string) int {
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
	ok := walk("", "", d.node)
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
	return walk("", d.node)
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

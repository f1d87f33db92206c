// Package manifest decodes and validates Kubernetes manifests for weir: files or
// folders of YAML and JSON, decoded strictly with the real API types (k8s.io/api,
// sigs.k8s.io/gateway-api, weir.dev/v1alpha1), defaulted as the API server defaults them
// where weir relies on it, and checked with the API server's rules plus cross-object
// references. Every problem is an Error naming file, line, object and field.
package manifest

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"weir.dev/weir/internal/model"
)

// Load reads the manifests at paths (files, or folders read recursively for .yaml, .yml
// and .json files, skipping hidden files and editor temp files) and returns the objects
// weir acts on. Kinds weir does not use are skipped and counted in the Report. When any
// manifest is invalid, Load returns no objects and an Errors listing every problem.
func Load(paths ...string) (*model.Objects, *Report, error) {
	return LoadWith(Options{}, paths...)
}

// LoadWith is Load with options.
func LoadWith(opts Options, paths ...string) (*model.Objects, *Report, error) {
	l := newLoader()
	l.own = opts.Own
	l.maxFileBytes = cmp.Or(opts.MaxFileBytes, DefaultMaxFileBytes)
	files, errs := collectFiles(paths)
	l.errs = append(l.errs, errs...)
	for _, f := range files {
		l.readFile(f)
	}
	l.report.Files = len(files)
	objs := l.finish()
	if len(l.errs) > 0 {
		l.errs.sort()
		return nil, l.report, l.errs
	}
	return objs, l.report, nil
}

// collectFiles expands paths into the manifest files to read, in a stable order.
func collectFiles(paths []string) ([]string, Errors) {
	var files []string
	var errs Errors
	seen := map[string]bool{}
	visitedDirs := map[string]bool{}
	add := func(f string) {
		f = filepath.Clean(f)
		if !seen[f] {
			seen[f] = true
			files = append(files, f)
		}
	}
	var walkDir func(dir string)
	walkDir = func(dir string) {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			errs = append(errs, Error{File: dir, Message: err.Error()})
			return
		}
		if visitedDirs[real] {
			return
		}
		visitedDirs[real] = true
		entries, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, Error{File: dir, Message: fmt.Sprintf("cannot read folder: %v", err)})
			return
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue // hidden files, editor swap files, ConfigMap ..data internals
			}
			p := filepath.Join(dir, name)
			info, err := os.Stat(p) // follows symlinks (ConfigMap volumes are symlinks)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // dangling symlink, or removed while we read
				}
				errs = append(errs, Error{File: p, Message: err.Error()})
				continue
			}
			switch {
			case info.IsDir():
				walkDir(p)
			case info.Mode().IsRegular() && IsManifestName(name):
				add(p)
			}
		}
	}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			errs = append(errs, Error{File: p, Message: fmt.Sprintf("cannot read: %v", unwrapPathError(err))})
			continue
		}
		if info.IsDir() {
			walkDir(p)
		} else {
			add(p) // a file named explicitly is read whatever its extension
		}
	}
	return files, errs
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// IsManifestName reports whether Load reads a file of this name found in a folder:
// .yaml, .yml or .json, not hidden, and not an editor's temp file.
func IsManifestName(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") || strings.HasPrefix(name, "~") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (l *loader) readFile(file string) {
	data, err := readManifest(file, l.maxFileBytes)
	if err != nil {
		l.errs = append(l.errs, Error{File: file, Message: err.Error()})
		return
	}
	src := &sourceFile{name: file, data: data, chunks: splitChunks(data)}
	for ci, c := range src.chunks {
		if apiVersion, kind, ok := sniff(data[c.start:c.end]); ok && l.skippable(apiVersion, kind) {
			continue // never parsed
		}
		roots, err := parseChunk(data, c)
		for index, root := range roots {
			if root == nil {
				continue
			}
			if hasAlias(root) {
				// Let yaml.v3's own decoder refuse alias cycles and alias bombs before any
				// walk of the node tree follows them.
				var v any
				if err := root.Decode(&v); err != nil {
					msg := strings.TrimPrefix(err.Error(), "yaml: ")
					l.errs = append(l.errs, Error{File: file, Line: root.Line, Message: msg})
					continue
				}
			}
			root = resolveAlias(root)
			if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
				continue // an empty document ("---" followed by comments only)
			}
			l.readDocument(newDocument(src, ci, index, nil, root), "", "")
		}
		if err != nil {
			e := Error{File: file, Message: err.Error()}
			if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
				e.Line, _ = strconv.Atoi(m[1])
				e.Line += c.line
				e.Message = m[2]
				if strings.HasPrefix(e.Message, "did not find expected") {
					e.Line++ // yaml.v3 gives the parser's context line zero-based
				}
			}
			l.errs = append(l.errs, e) // the parser cannot go on in this chunk; the next one is read
		}
	}
}

// DefaultMaxFileBytes is the largest manifest file Load reads.
const DefaultMaxFileBytes = 16 << 20

// readManifest reads a file of at most limit bytes; a larger one is an error, found
// without reading it.
func readManifest(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", unwrapPathError(err))
	}
	defer f.Close()
	tooBig := func(size int64) error {
		return fmt.Errorf("%d bytes is more than a manifest file may hold (%s); split it into several files or raise --max-manifest-size", size, byteSize(limit))
	}
	if info, err := f.Stat(); err == nil && info.Size() > limit {
		return nil, tooBig(info.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", unwrapPathError(err))
	}
	if int64(len(data)) > limit {
		return nil, tooBig(int64(len(data)))
	}
	return data, nil
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// readDocument handles one object, or the items of a List. apiVersion and kind default
// to the enclosing typed list's (ServiceList items carry none).
func (l *loader) readDocument(d *document, apiVersion, kind string) {
	if d.node.Kind != yaml.MappingNode {
		l.errs = append(l.errs, Error{File: d.file.name, Line: d.line, Message: "a manifest must be an object (a YAML mapping)"})
		return
	}
	if v := scalarField(d.node, "apiVersion"); v != "" {
		apiVersion = v
	}
	if k := scalarField(d.node, "kind"); k != "" {
		kind = k
	}
	if apiVersion == "" || kind == "" {
		l.errs = append(l.errs, Error{File: d.file.name, Line: d.line, Field: "kind", Message: "apiVersion and kind are required"})
		return
	}
	if items := mapValue(d.node, "items"); strings.HasSuffix(kind, "List") && items != nil {
		items = resolveAlias(items)
		if items.Kind != yaml.SequenceNode {
			l.errs = append(l.errs, Error{File: d.file.name, Line: d.lineOf("items"), Field: "items", Message: "must be a list"})
			return
		}
		itemKind := strings.TrimSuffix(kind, "List")
		itemVersion := apiVersion
		if kind == "List" {
			itemKind, itemVersion = "", ""
		}
		for i, item := range items.Content {
			path := append(slices.Clone(d.item), i)
			l.readDocument(newDocument(d.file, d.chunk, d.index, path, resolveAlias(item)), itemVersion, itemKind)
		}
		return
	}
	l.decode(d, apiVersion, kind)
}

// hasAlias reports whether the tree has an alias node, without following any.
func hasAlias(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode {
		return true
	}
	for _, c := range n.Content {
		if hasAlias(c) {
			return true
		}
	}
	return false
}

// mapValue is the value of key in a mapping node, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for _, kv := range mappingPairs(n) {
		if kv[0].Value == key {
			return resolveAlias(kv[1])
		}
	}
	return nil
}

func scalarField(n *yaml.Node, key string) string {
	if v := mapValue(n, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}

// sortedKeys lists a count map's keys, most frequent first, then by name.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	return keys
}

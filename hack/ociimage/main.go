// Command ociimage writes a container image as an OCI image-layout archive, the format
// `ctr images import` and `docker load`-compatible tools read, from files on disk: no
// registry, no daemon, no base image. Every -add makes one layer (in order), so a large
// layer that rarely changes (Debian packages) and a small one that changes often (a Go
// binary) are stored and imported apart.
//
//	go run ./hack/ociimage -o weir.tar -tag weir:latest \
//	    -add /tmp/debs-root:/ -add ./weir:/usr/local/bin/weir \
//	    -entrypoint /usr/local/bin/weir
//
// A SRC directory is copied recursively to DST; a file goes to DST exactly. -symlink
// LINK:TARGET adds a symbolic link to the last layer. The archive is reproducible: entries
// are sorted, times are the Unix epoch, owners are root unless -owner says otherwise.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// image is what the flags describe.
type image struct {
	tags       []string
	layers     [][]entry
	entrypoint []string
	cmd        []string
	env        []string
	user       string
	workdir    string
	ports      []string
}

// entry is one file, directory or symlink of a layer, at its path inside the image.
type entry struct {
	name   string // image path without the leading slash
	src    string // host path for regular files
	mode   fs.FileMode
	target string // symlink target
}

func main() {
	var (
		out                              string
		tags, adds, links, envs, cmdArgs listFlag
		entrypoint, user, workdir, ports string
	)
	flag.StringVar(&out, "o", "", "output archive (OCI image layout in a tar)")
	flag.Var(&tags, "tag", "image name, for example registry.k8s.io/pause:3.10.2; repeatable")
	flag.Var(&adds, "add", "SRC:DST, one layer each; SRC a file or a directory; repeatable")
	flag.Var(&links, "symlink", "LINK:TARGET in the last layer; repeatable")
	flag.Var(&envs, "env", "KEY=VALUE; repeatable (PATH has a default)")
	flag.Var(&cmdArgs, "cmd", "one argument of the default command; repeatable")
	flag.StringVar(&entrypoint, "entrypoint", "", "entrypoint, space-separated")
	flag.StringVar(&user, "user", "", "user (uid[:gid])")
	flag.StringVar(&workdir, "workdir", "/", "working directory")
	flag.StringVar(&ports, "ports", "", "exposed ports, comma-separated (8080/tcp,53/udp)")
	flag.Parse()
	if out == "" || len(tags) == 0 || len(adds) == 0 {
		fmt.Fprintln(os.Stderr, "usage: ociimage -o OUT.tar -tag NAME -add SRC:DST [...]")
		os.Exit(2)
	}
	img := image{tags: tags, cmd: cmdArgs, env: envs, user: user, workdir: workdir}
	if entrypoint != "" {
		img.entrypoint = strings.Fields(entrypoint)
	}
	if ports != "" {
		img.ports = strings.Split(ports, ",")
	}
	for _, a := range adds {
		src, dst, ok := strings.Cut(a, ":")
		if !ok {
			fail(fmt.Errorf("-add %q: want SRC:DST", a))
		}
		entries, err := collect(src, dst)
		if err != nil {
			fail(err)
		}
		img.layers = append(img.layers, entries)
	}
	for _, l := range links {
		link, target, ok := strings.Cut(l, ":")
		if !ok {
			fail(fmt.Errorf("-symlink %q: want LINK:TARGET", l))
		}
		last := &img.layers[len(img.layers)-1]
		*last = append(*last, entry{name: clean(link), mode: fs.ModeSymlink | 0o777, target: target})
	}
	if err := write(out, img); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ociimage:", err)
	os.Exit(1)
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// collect lists SRC (a file or a tree) placed at DST.
func collect(src, dst string) ([]entry, error) {
	info, err := os.Lstat(src)
	if err != nil {
		return nil, fmt.Errorf("-add %s: %w", src, err)
	}
	if !info.IsDir() {
		if info.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(src)
			if err != nil {
				return nil, err
			}
			return []entry{{name: clean(dst), mode: info.Mode(), target: t}}, nil
		}
		return []entry{{name: clean(dst), src: src, mode: info.Mode()}}, nil
	}
	var entries []entry
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		name := clean(path.Join(dst, filepath.ToSlash(rel)))
		if name == "" {
			return nil // the root itself
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{name: name, mode: info.Mode()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if e.target, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			e.src = p
		case info.IsDir():
		default:
			return nil // devices, sockets, fifos: not in images
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("-add %s: %w", src, err)
	}
	return entries, nil
}

// layerTar writes one layer's tar: parent directories first, entries sorted by name.
func layerTar(w io.Writer, entries []entry) error {
	all := map[string]entry{}
	for _, e := range entries {
		for dir := path.Dir(e.name); dir != "." && dir != "/"; dir = path.Dir(dir) {
			if _, ok := all[dir]; !ok {
				all[dir] = entry{name: dir, mode: fs.ModeDir | 0o755}
			}
		}
		all[e.name] = e
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		e := all[n]
		h := &tar.Header{Name: n, Mode: int64(e.mode.Perm()), ModTime: epoch, Format: tar.FormatPAX}
		if e.mode&fs.ModeSetuid != 0 {
			h.Mode |= 0o4000
		}
		if e.mode&fs.ModeSetgid != 0 {
			h.Mode |= 0o2000
		}
		if e.mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case e.mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, n+"/"
		case e.mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.target
		default:
			info, err := os.Stat(e.src)
			if err != nil {
				return err
			}
			h.Typeflag, h.Size = tar.TypeReg, info.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(e.src)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", e.src, err)
			}
			if n != h.Size {
				return fmt.Errorf("%s changed size while archived", e.src)
			}
		}
	}
	return tw.Close()
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

const (
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
)

// blob is content addressed by its sha256.
type blob struct {
	digest string
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), data: data}
}

func write(out string, img image) error {
	var blobs []blob
	var layerDescs []descriptor
	var diffIDs []string
	for _, entries := range img.layers {
		var raw bytes.Buffer
		if err := layerTar(&raw, entries); err != nil {
			return err
		}
		rawSum := sha256.Sum256(raw.Bytes())
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(rawSum[:]))
		var gz bytes.Buffer
		zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
		if err != nil {
			return err
		}
		if _, err := zw.Write(raw.Bytes()); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		b := newBlob(gz.Bytes())
		blobs = append(blobs, b)
		layerDescs = append(layerDescs, descriptor{MediaType: mediaLayer, Digest: b.digest, Size: int64(len(b.data))})
	}

	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	env = append(env, img.env...)
	exposed := map[string]struct{}{}
	for _, p := range img.ports {
		exposed[p] = struct{}{}
	}
	cfg := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC().Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint":   img.entrypoint,
			"Cmd":          img.cmd,
			"Env":          env,
			"User":         img.user,
			"WorkingDir":   img.workdir,
			"ExposedPorts": exposed,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cfgBlob := newBlob(cfgJSON)
	blobs = append(blobs, cfgBlob)

	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        descriptor{MediaType: mediaConfig, Digest: cfgBlob.digest, Size: int64(len(cfgJSON))},
		"layers":        layerDescs,
	}
	manJSON, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	manBlob := newBlob(manJSON)
	blobs = append(blobs, manBlob)

	index := map[string]any{"schemaVersion": 2, "mediaType": mediaIndex}
	var manifests []descriptor
	for _, tag := range img.tags {
		ref := tag
		if i := strings.LastIndex(tag, ":"); i > strings.LastIndex(tag, "/") {
			ref = tag[i+1:]
		}
		manifests = append(manifests, descriptor{
			MediaType: mediaManifest, Digest: manBlob.digest, Size: int64(len(manJSON)),
			Platform: &platform{Architecture: runtime.GOARCH, OS: "linux"},
			Annotations: map[string]string{
				"io.containerd.image.name":          normalize(tag),
				"org.opencontainers.image.ref.name": ref,
			},
		})
	}
	index["manifests"] = manifests
	idxJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}

	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	epoch := time.Unix(0, 0)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	errs := []error{add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)), add("index.json", idxJSON)}
	seen := map[string]bool{}
	for _, b := range blobs {
		if seen[b.digest] {
			continue
		}
		seen[b.digest] = true
		errs = append(errs, add("blobs/sha256/"+strings.TrimPrefix(b.digest, "sha256:"), b.data))
	}
	errs = append(errs, tw.Close(), f.Close())
	if err := errors.Join(errs...); err != nil {
		os.Remove(out + ".tmp")
		return err
	}
	return os.Rename(out+".tmp", out)
}

// normalize gives a name as containerd stores it: docker.io/library/ for short names.
func normalize(tag string) string {
	first, _, hasSlash := strings.Cut(tag, "/")
	if !hasSlash {
		return "docker.io/library/" + tag
	}
	if !strings.ContainsAny(first, ".:") && first != "localhost" {
		return "docker.io/" + tag
	}
	return tag
}

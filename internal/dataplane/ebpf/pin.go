package ebpf

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultPinPath is where weir run pins the maps and program links: a directory of the
// bpffs mounted on /sys/fs/bpf.
const DefaultPinPath = "/sys/fs/bpf/weir"

// The pin directory holds maps/<map name> and links/<program name>.
const (
	pinMaps  = "maps"
	pinLinks = "links"
)

// ensureBPFFS makes sure dir is on a bpffs, mounting one there when nothing is (as
// Cilium and systemd mount /sys/fs/bpf).
func ensureBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("bpffs %s: %w", dir, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// pinnedSpec marks every map of spec for pinning by name.
func pinnedSpec(spec *ebpf.CollectionSpec) {
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinByName
	}
}

// attachPinned attaches prog to cgroup through the link pinned at path: a link an
// earlier run pinned is updated to prog in place (atomically: no connect goes
// unbalanced); otherwise a new link is made and pinned.
func attachPinned(path, cgroup string, typ ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		if err := l.Update(prog); err == nil {
			return l, nil
		}
		// Not a cgroup link of this type, or the kernel refused: start over.
		_ = l.Unpin()
		_ = l.Close()
	} else if !errors.Is(err, fs.ErrNotExist) {
		_ = os.Remove(path)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: typ, Program: prog})
	if err != nil {
		return nil, err
	}
	if err := l.Pin(path); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("pin link: %w", err)
	}
	return l, nil
}

// Pins are the maps and links a Proxier with PinPath left in the kernel, for finding
// and removing them without loading anything (weir cleanup).
type Pins struct{ Path string }

// Leftovers reports whether anything is pinned under Path.
func (p Pins) Leftovers(context.Context) (bool, error) {
	for _, sub := range []string{pinLinks, pinMaps} {
		ents, err := os.ReadDir(filepath.Join(p.Path, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("ebpf pins: %w", err)
		}
		if len(ents) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Cleanup detaches the pinned programs (unpinning a link whose last reference goes
// away detaches it) and removes the pinned maps and the directory.
func (p Pins) Cleanup(context.Context) error {
	var errs []error
	dir := filepath.Join(p.Path, pinLinks)
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("ebpf pins: %w", err))
	}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("ebpf pins: load link %s: %w", path, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("ebpf pins: unpin link %s: %w", path, err))
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("ebpf pins: detach %s: %w", path, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(p.Path); err != nil {
		return fmt.Errorf("ebpf pins: %w", err)
	}
	return nil
}

// Close does nothing: Pins hold no resources.
func (Pins) Close() {}

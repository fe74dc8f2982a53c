package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
)

// Store holds the archive's objects by name ("2026/12/04/manifest.json"). Names use
// forward slashes. The directory implementation is DirStore; object storage can follow
// behind the same interface.
type Store interface {
	// Put stores r's bytes under name, replacing what was there atomically: a reader
	// sees the old object or the new one, never a part.
	Put(ctx context.Context, name string, r io.Reader) error
	// Get opens the object; errors.Is(err, fs.ErrNotExist) when there is none.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// List returns the names that start with prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// Sizer is what a Store may add to tell an object's size without reading it (ls uses it
// to flag a file cut short or missing cheaply).
type Sizer interface {
	Size(ctx context.Context, name string) (int64, error)
}

// DayLister is what a Store may add to list the days (YYYY/MM/DD) that hold objects
// without listing every object; the reader falls back to List without it.
type DayLister interface {
	Days(ctx context.Context) ([]string, error)
}

// DirStore is a Store on a local directory. Put writes a temporary file next to the
// target, fsyncs it, renames it over the target and fsyncs the directory.
type DirStore struct {
	Root string
}

var (
	_ Store     = DirStore{}
	_ Sizer     = DirStore{}
	_ DayLister = DirStore{}
)

// file maps a store name to a path under Root, refusing names that leave it.
func (d DirStore) file(name string) (string, error) {
	if name == "" || !fs.ValidPath(name) || strings.Contains(name, `\`) {
		return "", fmt.Errorf("archive: object name %q is not a clean relative path", name)
	}
	return filepath.Join(d.Root, filepath.FromSlash(name)), nil
}

// Put implements Store.
func (d DirStore) Put(ctx context.Context, name string, r io.Reader) (err error) {
	p, err := d.file(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := d.mkdirs(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("archive: create temporary file for %s: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = io.Copy(f, r); err != nil {
		return fmt.Errorf("archive: write %s: %w", tmp, err)
	}
	if err = ctx.Err(); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("archive: fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("archive: close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, p); err != nil {
		return fmt.Errorf("archive: rename %s to %s: %w", tmp, p, err)
	}
	if err = fsutil.SyncDir(dir); err != nil {
		return fmt.Errorf("archive: fsync %s: %w", dir, err)
	}
	return nil
}

// mkdirs creates dir and its missing parents under Root and fsyncs the parent of each
// one created, so the new file's path survives a power loss along with the file.
func (d DirStore) mkdirs(dir string) error {
	var created []string
	for p := dir; p != d.Root && len(p) > len(d.Root); p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		created = append(created, p)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("archive: create directory %s: %w", dir, err)
	}
	for _, p := range created {
		if err := fsutil.SyncDir(filepath.Dir(p)); err != nil {
			return fmt.Errorf("archive: fsync %s: %w", filepath.Dir(p), err)
		}
	}
	return nil
}

// Days implements DayLister: the YYYY/MM/DD directories under Root, sorted.
func (d DirStore) Days(ctx context.Context) ([]string, error) {
	var out []string
	years, err := os.ReadDir(d.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("archive: list %s: %w", d.Root, err)
	}
	for _, y := range years {
		months, err := readDirs(filepath.Join(d.Root, y.Name()), y)
		if err != nil {
			return nil, err
		}
		for _, m := range months {
			days, err := readDirs(filepath.Join(d.Root, y.Name(), m.Name()), m)
			if err != nil {
				return nil, err
			}
			for _, dd := range days {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				if name := y.Name() + "/" + m.Name() + "/" + dd.Name(); dd.IsDir() && isDay(name) {
					out = append(out, name)
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

func readDirs(p string, e fs.DirEntry) ([]fs.DirEntry, error) {
	if !e.IsDir() {
		return nil, nil
	}
	es, err := os.ReadDir(p)
	if err != nil {
		return nil, fmt.Errorf("archive: list %s: %w", p, err)
	}
	return es, nil
}

// Get implements Store.
func (d DirStore) Get(_ context.Context, name string) (io.ReadCloser, error) {
	p, err := d.file(name)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// Size implements Sizer.
func (d DirStore) Size(_ context.Context, name string) (int64, error) {
	p, err := d.file(name)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// List implements Store. Temporary files of an interrupted Put are left out.
func (d DirStore) List(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(d.Root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == d.Root {
				return fs.SkipAll // an archive nothing was written to yet
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(d.Root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("archive: list %s: %w", path.Join(d.Root, prefix), err)
	}
	slices.Sort(out)
	return out, nil
}

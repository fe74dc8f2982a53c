package archive

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func osMkdirAll(path string) error { return os.MkdirAll(path, 0o700) }

// Filter selects archived events: commit time in [From, To) (zero: open) and, when
// Types is set, one of those types.
type Filter struct {
	From, To time.Time
	Types    []string
}

func (f Filter) wantsFile(fi FileInfo) bool {
	if len(f.Types) > 0 && !slices.Contains(f.Types, fi.Type) {
		return false
	}
	if !f.From.IsZero() && fi.LastTime.Before(f.From) {
		return false
	}
	if !f.To.IsZero() && !fi.FirstTime.Before(f.To) {
		return false
	}
	return true
}

func (f Filter) wantsEvent(ev *eventv1.CommittedEvent) bool {
	t := ev.GetCommittedAt().AsTime()
	if !f.From.IsZero() && t.Before(f.From) {
		return false
	}
	return f.To.IsZero() || t.Before(f.To)
}

// Listing is what the manifests of an archive say, filtered.
type Listing struct {
	// Files in the order of their first seq.
	Files []FileInfo
	// Damaged lists manifests that could not be read: none of their files is listed.
	Damaged []*DamagedError
}

// List reads the manifests of the days the filter's time range touches and returns the
// files it selects. It does not read the files (Check does).
func (d *Dir) List(ctx context.Context, f Filter) (*Listing, error) {
	days, err := d.days(ctx)
	if err != nil {
		return nil, err
	}
	out := &Listing{}
	for _, dir := range days {
		day, _ := time.Parse("2006/01/02", dir)
		if !f.From.IsZero() && !day.Add(24*time.Hour).After(f.From) {
			continue // the whole day is before From
		}
		if !f.To.IsZero() && !day.Before(f.To) {
			continue
		}
		m, err := d.readManifest(ctx, dir)
		if err == nil && len(m.Files) == 0 {
			// No manifest: a day directory being written, or a manifest lost.
			names, err := d.store.List(ctx, dir+"/")
			if err != nil {
				return nil, err
			}
			n := 0
			for _, name := range names {
				if fileNameRE.MatchString(strings.TrimPrefix(name, dir+"/")) {
					n++
				}
			}
			if n > 0 {
				out.Damaged = append(out.Damaged, &DamagedError{Name: manifestName(dir), Reason: fmt.Sprintf(
					"missing, and the day has %d archive files: copy it from another node, or the next prune of this day rebuilds it", n)})
			}
			continue
		}
		if err != nil {
			var de *DamagedError
			if errors.As(err, &de) {
				out.Damaged = append(out.Damaged, de)
				continue
			}
			return nil, err
		}
		for _, fi := range m.Files {
			if f.wantsFile(fi) {
				out.Files = append(out.Files, fi)
			}
		}
	}
	slices.SortFunc(out.Files, func(a, b FileInfo) int {
		return cmp.Or(cmp.Compare(a.FirstSeq, b.FirstSeq), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

// days returns the days that have a manifest (or a directory, with a DayLister).
func (d *Dir) days(ctx context.Context) ([]string, error) {
	if dl, ok := d.store.(DayLister); ok {
		return dl.Days(ctx)
	}
	names, err := d.store.List(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		if isManifest(name) {
			out = append(out, strings.TrimSuffix(name, "/manifest.json"))
		}
	}
	return out, nil
}

// Stat checks what can be checked without reading a file: that it is there, with the
// manifest's size (when the store can tell sizes). nil when it looks whole.
func (d *Dir) Stat(ctx context.Context, fi FileInfo) error {
	sz, ok := d.store.(Sizer)
	if !ok {
		return nil
	}
	n, err := sz.Size(ctx, fi.Name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &DamagedError{Name: fi.Name, Reason: "missing: the manifest lists it but the store has no such file"}
	case err != nil:
		return fmt.Errorf("archive: stat %s: %w", fi.Name, err)
	case n != fi.Bytes:
		return &DamagedError{Name: fi.Name, Reason: fmt.Sprintf("%d bytes, the manifest says %d", n, fi.Bytes)}
	}
	return nil
}

// load reads a file's bytes and checks them against its entry (checksum, then every
// record). A *DamagedError when they do not match.
func (d *Dir) load(ctx context.Context, fi FileInfo) ([]byte, error) {
	rc, err := d.store.Get(ctx, fi.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &DamagedError{Name: fi.Name, Reason: "missing: the manifest lists it but the store has no such file"}
	}
	if err != nil {
		return nil, fmt.Errorf("archive: open %s: %w", fi.Name, err)
	}
	defer rc.Close()
	// Read one byte more than the manifest says, to tell a longer file.
	data, err := io.ReadAll(io.LimitReader(rc, fi.Bytes+1))
	if err != nil {
		return nil, fmt.Errorf("archive: read %s: %w", fi.Name, err)
	}
	if err := checkFile(fi, data); err != nil {
		return nil, err
	}
	return data, nil
}

// Check verifies one file: its SHA-256 against the manifest, and every record decoded.
func (d *Dir) Check(ctx context.Context, fi FileInfo) error {
	_, err := d.load(ctx, fi)
	return err
}

// Events iterates the archived events the filter selects, in seq order across files.
// Each file is read whole, checked against its manifest entry and decoded before any of
// its events is yielded; a damaged file ends the iteration with a *DamagedError naming
// it, and nothing of it is yielded. Damaged manifests in the selection end it too,
// before anything is yielded. The iterator holds the decoded events of the files whose
// seq ranges overlap (one file per type of a day, usually; MaxFileEvents each at most).
func (d *Dir) Events(ctx context.Context, f Filter) (*Iterator, error) {
	l, err := d.List(ctx, f)
	if err != nil {
		return nil, err
	}
	if len(l.Damaged) > 0 {
		return nil, l.Damaged[0]
	}
	return &Iterator{d: d, ctx: ctx, f: f, files: l.Files}, nil
}

// Iterator yields archived events in seq order; see Dir.Events.
type Iterator struct {
	d     *Dir
	ctx   context.Context
	f     Filter
	files []FileInfo // not opened yet, by first seq
	open  cursorHeap
	last  uint64 // seq of the last event yielded
	err   error
}

// Files returns the files the iterator reads (from the manifests).
func (it *Iterator) Files() []FileInfo { return it.files }

type cursor struct {
	evs []*eventv1.CommittedEvent
	i   int
}

type cursorHeap []*cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	return h[i].evs[h[i].i].GetSeq() < h[j].evs[h[j].i].GetSeq()
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

// Next returns the next event, io.EOF after the last, or the error that ended the
// iteration (a *DamagedError for a damaged file).
func (it *Iterator) Next() (*eventv1.CommittedEvent, error) {
	for it.err == nil {
		if err := it.ctx.Err(); err != nil {
			it.err = err
			break
		}
		// Open every file that may hold an event before the open files' next one.
		for len(it.files) > 0 && (it.open.Len() == 0 || it.files[0].FirstSeq <= it.open[0].evs[it.open[0].i].GetSeq()) {
			fi := it.files[0]
			it.files = it.files[1:]
			if err := it.openFile(fi); err != nil {
				it.err = err
				return nil, err
			}
		}
		if it.open.Len() == 0 {
			it.err = io.EOF
			break
		}
		c := it.open[0]
		ev := c.evs[c.i]
		if c.i++; c.i == len(c.evs) {
			heap.Pop(&it.open)
		} else {
			heap.Fix(&it.open, 0)
		}
		// An event in two files (a prune replayed with another MaxFileEvents) is
		// yielded once.
		if ev.GetSeq() > it.last && it.f.wantsEvent(ev) {
			it.last = ev.GetSeq()
			return ev, nil
		}
	}
	return nil, it.err
}

// openFile loads a whole file, checks it and keeps its selected events.
func (it *Iterator) openFile(fi FileInfo) error {
	data, err := it.d.load(it.ctx, fi)
	if err != nil {
		return err
	}
	var evs []*eventv1.CommittedEvent
	if err := DecodeFile(data, func(ev *eventv1.CommittedEvent) error {
		if it.f.wantsEvent(ev) {
			evs = append(evs, ev)
		}
		return nil
	}); err != nil {
		return &DamagedError{Name: fi.Name, Reason: err.Error()}
	}
	if len(evs) > 0 {
		heap.Push(&it.open, &cursor{evs: evs})
	}
	return nil
}

// Count checks one file like Check and returns how many of its events f selects.
func (d *Dir) Count(ctx context.Context, fi FileInfo, f Filter) (uint64, error) {
	data, err := d.load(ctx, fi)
	if err != nil {
		return 0, err
	}
	var n uint64
	if err := DecodeFile(data, func(ev *eventv1.CommittedEvent) error {
		if f.wantsEvent(ev) {
			n++
		}
		return nil
	}); err != nil {
		return 0, &DamagedError{Name: fi.Name, Reason: err.Error()}
	}
	return n, nil
}

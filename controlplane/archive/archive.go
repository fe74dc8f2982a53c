// Package archive keeps the events the ledger prunes, in compressed files partitioned
// by day and event type, with a manifest per day that lists every file with its event
// count, seq and time range, size and SHA-256.
//
// Layout (names in a Store; DirStore maps them to a directory):
//
//	2026/12/04/manifest.json
//	2026/12/04/inventory.level/000000000123-000000004567.pb.gz
//
// A file holds the events of one type committed on one UTC day, from one prune, in seq
// order: gzip of length-delimited records, each a uvarint byte length followed by a
// crossdock.event.v1.CommittedEvent in binary protobuf (deterministic marshalling; the
// framing of protodelim). Binary records are exact (unknown fields of a newer agent
// survive, nothing is re-formatted) and compact; `crossdock archive cat` prints them
// as JSON lines for grep.
//
// Archive is idempotent: the same events make the same names and the same bytes, files
// are written to a temporary name, fsynced and renamed, and a file the day's manifest
// already lists is not written again. The manifest is replaced the same way, after the
// files it lists, so a crash leaves at worst a file no manifest lists yet, written again
// when the prune's Apply is replayed.
//
// The reader checks a file's SHA-256 against its manifest and decodes the whole file
// before it yields any of its events: a damaged file is reported by name, with the
// reason, never half-read.
package archive

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// DefaultMaxFileEvents bounds the events of one file, so a reader holds at most one
// file's events per type at a time (about 5 MB of 256-byte events).
const DefaultMaxFileEvents = 20_000

// maxRecordBytes bounds one record (an event is at most 1 MiB at ingest).
const maxRecordBytes = 8 << 20

// formatComment is the gzip header comment of every archive file: what is inside.
const formatComment = "crossdock archive v1: length-delimited crossdock.event.v1.CommittedEvent"

// Dir is an archive: a Store (a local directory from OpenDir) and the rules above. It
// implements the ledger's Archiver hook (Archive). Safe for concurrent use.
type Dir struct {
	store Store
	// MaxFileEvents bounds the events of one file (DefaultMaxFileEvents when 0). It
	// must stay the same for a prune replayed after a crash to write the same names.
	MaxFileEvents int
	// Logger receives warnings (a manifest rebuilt); none when nil.
	Logger *slog.Logger

	mu sync.Mutex // serialises writers (read-modify-write of manifests)
	// through is, per type, the highest seq archived: every event of the type up to it
	// is in the archive (a type is archived in seq order, each call extending what is
	// there). Loaded from the manifests on first use; nil until then.
	through map[string]uint64
	// marks is a copy of through that readers take without mu (ArchivedThrough): a
	// prune's Apply asks it on every node while ArchiveAhead may hold mu writing and
	// fsyncing files. Replaced, never changed, each time through moves.
	marks atomic.Pointer[map[string]uint64]
}

// OpenDir returns the archive kept in the local directory path, creating it.
func OpenDir(path string) (*Dir, error) {
	if path == "" {
		return nil, errors.New("archive: no directory given")
	}
	if err := osMkdirAll(path); err != nil {
		return nil, fmt.Errorf("archive: create %s: %w (check --archive-dir and its permissions)", path, err)
	}
	return &Dir{store: DirStore{Root: path}}, nil
}

// New returns an archive kept in store (object storage, or a DirStore).
func New(store Store) *Dir {
	return &Dir{store: store}
}

// Store returns the store the archive keeps its objects in.
func (d *Dir) Store() Store { return d.store }

func (d *Dir) maxFileEvents() int {
	if d.MaxFileEvents > 0 {
		return d.MaxFileEvents
	}
	return DefaultMaxFileEvents
}

type groupKey struct{ dir, typ string }

// Archive stores events about to be pruned. It is the ledger's Archiver hook, called on
// every node inside the Apply of a prune before anything is deleted: idempotent (the
// same events again write nothing new) and deterministic in what it writes. The events
// are grouped by UTC day of commit time and type, each group split into files of at most
// MaxFileEvents in seq order.
func (d *Dir) Archive(ctx context.Context, events []*eventv1.CommittedEvent) error {
	if len(events) == 0 {
		return nil
	}
	sorted := slices.Clone(events)
	slices.SortStableFunc(sorted, func(a, b *eventv1.CommittedEvent) int { return cmp.Compare(a.GetSeq(), b.GetSeq()) })
	sorted = slices.CompactFunc(sorted, func(a, b *eventv1.CommittedEvent) bool { return a.GetSeq() == b.GetSeq() })
	groups := map[groupKey][]*eventv1.CommittedEvent{}
	for _, ev := range sorted {
		if ev.GetSeq() == 0 {
			return fmt.Errorf("archive: an event without a seq (id %q) cannot be archived", ev.GetEvent().GetId())
		}
		k := groupKey{dayDir(ev.GetCommittedAt().AsTime()), ev.GetEvent().GetType()}
		groups[k] = append(groups[k], ev)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.loadThrough(ctx); err != nil {
		return err
	}
	// Events at or below the type's mark are archived already (by ArchiveAhead, or a
	// prune replayed): skip them, so every event is in the archive once.
	for k, evs := range groups {
		w := d.through[k.typ]
		i := 0
		for i < len(evs) && evs[i].GetSeq() <= w {
			i++
		}
		groups[k] = evs[i:] // an empty group still checks (and rebuilds) its day's manifest
	}
	manifests := map[string]*Manifest{}
	changed := map[string]bool{}
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b groupKey) int {
		return cmp.Or(cmp.Compare(a.dir, b.dir), cmp.Compare(a.typ, b.typ))
	})
	for _, k := range keys {
		m := manifests[k.dir]
		if m == nil {
			var err error
			var rebuilt bool
			if m, rebuilt, err = d.manifestForWrite(ctx, k.dir); err != nil {
				return err
			}
			manifests[k.dir] = m
			if rebuilt {
				changed[k.dir] = true
			}
		}
		evs := groups[k]
		for len(evs) > 0 {
			n := min(len(evs), d.maxFileEvents())
			part := evs[:n]
			evs = evs[n:]
			info, data, err := encodeFile(k.dir, k.typ, part)
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(m.Files, func(f FileInfo) bool { return f.Name == info.Name }); i >= 0 {
				old := m.Files[i]
				if old.Events == info.Events && old.FirstSeq == info.FirstSeq && old.LastSeq == info.LastSeq {
					continue // archived before (a replayed prune)
				}
				return fmt.Errorf("archive: %s is already listed in %s with %d events, this prune has %d for the same seq range; the archive does not match the ledger (restored from another cluster?)",
					info.Name, manifestName(k.dir), old.Events, info.Events)
			}
			if err := d.store.Put(ctx, info.Name, bytes.NewReader(data)); err != nil {
				return fmt.Errorf("archive: write %s: %w", info.Name, err)
			}
			m.Files = append(m.Files, info)
			changed[k.dir] = true
		}
	}
	for _, dir := range slices.Sorted(maps.Keys(changed)) {
		if err := d.store.Put(ctx, manifestName(dir), bytes.NewReader(manifests[dir].encode())); err != nil {
			return fmt.Errorf("archive: write %s: %w", manifestName(dir), err)
		}
	}
	// Only now (files and manifests fsynced) the marks move.
	moved := false
	for k, evs := range groups {
		if len(evs) > 0 {
			d.through[k.typ] = max(d.through[k.typ], evs[len(evs)-1].GetSeq())
			moved = true
		}
	}
	if moved {
		d.publishMarks()
	}
	return nil
}

// ArchivedThrough returns the highest seq of type typ in the archive: every event of
// the type up to it is archived (0 when none is). The ledger's ArchiveAhead starts
// after it, and a prune's Apply archives only the events after it. Once the marks are
// loaded it does not wait for a write in progress (it may return the mark from before
// that write, which only makes a caller archive events again: Archive skips them).
func (d *Dir) ArchivedThrough(ctx context.Context, typ string) (uint64, error) {
	if m := d.marks.Load(); m != nil {
		return (*m)[typ], nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.loadThrough(ctx); err != nil {
		return 0, err
	}
	return d.through[typ], nil
}

// loadThrough reads the marks from the manifests once. A damaged manifest counts for
// nothing (its events are archived again, into new files, when they are pruned).
func (d *Dir) loadThrough(ctx context.Context) error {
	if d.through != nil {
		return nil
	}
	days, err := d.days(ctx)
	if err != nil {
		return fmt.Errorf("archive: list the days to find what is archived: %w", err)
	}
	through := map[string]uint64{}
	for _, dir := range days {
		m, err := d.readManifest(ctx, dir)
		var de *DamagedError
		if errors.As(err, &de) {
			d.warn("archive: a damaged manifest does not count as archived", "manifest", de.Name, "reason", de.Reason)
			continue
		}
		if err != nil {
			return err
		}
		for _, f := range m.Files {
			through[f.Type] = max(through[f.Type], f.LastSeq)
		}
	}
	d.through = through
	d.publishMarks()
	return nil
}

// publishMarks makes a copy of through the marks ArchivedThrough reads. Called with mu
// held.
func (d *Dir) publishMarks() {
	m := maps.Clone(d.through)
	d.marks.Store(&m)
}

// manifestForWrite returns the day's manifest for Archive to add to. A manifest that is
// damaged, or missing while the day has files (deleted, or a crash between a file and
// its manifest), is rebuilt from the day's files that decode whole, so a damaged
// manifest on one node does not stop its prunes; the damaged one is kept next to it as
// manifest.json.damaged. rebuilt says the manifest must be written.
func (d *Dir) manifestForWrite(ctx context.Context, dir string) (*Manifest, bool, error) {
	m, err := d.readManifest(ctx, dir)
	var de *DamagedError
	switch {
	case errors.As(err, &de):
	case err != nil:
		return nil, false, err
	case len(m.Files) > 0:
		return m, false, nil
	}
	names, lerr := d.store.List(ctx, dir+"/")
	if lerr != nil {
		return nil, false, lerr
	}
	day, _ := time.Parse("2006/01/02", dir)
	out := &Manifest{Version: ManifestVersion, Day: day.Format(time.DateOnly)}
	for _, name := range names {
		if !fileNameRE.MatchString(strings.TrimPrefix(name, dir+"/")) {
			continue
		}
		fi, ferr := d.describe(ctx, dir, name)
		if ferr != nil {
			d.warn("archive: a file is left out of the rebuilt manifest", "file", name, "err", ferr)
			continue
		}
		out.Files = append(out.Files, fi)
	}
	if de == nil && len(out.Files) == 0 {
		return out, false, nil // a new day
	}
	if de != nil {
		if rc, gerr := d.store.Get(ctx, manifestName(dir)); gerr == nil {
			perr := d.store.Put(ctx, manifestName(dir)+".damaged", rc)
			rc.Close()
			if perr != nil {
				return nil, false, fmt.Errorf("archive: keep the damaged %s: %w", manifestName(dir), perr)
			}
		}
	}
	d.warn("archive: rebuilt a day's manifest from its files", "manifest", manifestName(dir), "files", len(out.Files), "damaged", fmt.Sprint(err))
	return out, true, nil
}

var fileNameRE = regexp.MustCompile(`^[^/]+/[0-9]{12,20}-[0-9]{12,20}\.pb\.gz$`)

// describe reads a file and makes its manifest entry from what it holds.
func (d *Dir) describe(ctx context.Context, dir, name string) (FileInfo, error) {
	rc, err := d.store.Get(ctx, name)
	if err != nil {
		return FileInfo{}, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return FileInfo{}, err
	}
	var evs []*eventv1.CommittedEvent
	if err := DecodeFile(data, func(ev *eventv1.CommittedEvent) error {
		evs = append(evs, ev)
		return nil
	}); err != nil {
		return FileInfo{}, err
	}
	if len(evs) == 0 {
		return FileInfo{}, errors.New("no events")
	}
	fi, _, err := encodeFile(dir, evs[0].GetEvent().GetType(), evs)
	if err != nil {
		return FileInfo{}, err
	}
	// The entry describes the bytes on disk, which another version may have compressed
	// differently from this one.
	sum := sha256.Sum256(data)
	fi.Bytes, fi.SHA256 = int64(len(data)), hex.EncodeToString(sum[:])
	if fi.Name != name {
		return FileInfo{}, fmt.Errorf("holds what belongs in %s", fi.Name)
	}
	if err := checkFile(fi, data); err != nil {
		return FileInfo{}, err
	}
	return fi, nil
}

func (d *Dir) warn(msg string, args ...any) {
	if d.Logger != nil {
		d.Logger.Warn(msg, args...)
	}
}

// readManifest returns the day's manifest, an empty one when there is none yet.
func (d *Dir) readManifest(ctx context.Context, dir string) (*Manifest, error) {
	name := manifestName(dir)
	rc, err := d.store.Get(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		day, _ := time.Parse("2006/01/02", dir)
		return &Manifest{Version: ManifestVersion, Day: day.Format(time.DateOnly)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("archive: read %s: %w", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("archive: read %s: %w", name, err)
	}
	if len(b) > maxManifestBytes {
		return nil, &DamagedError{Name: name, Reason: fmt.Sprintf("larger than %d bytes", maxManifestBytes)}
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, &DamagedError{Name: name, Reason: err.Error()}
	}
	return m, nil
}

// encodeFile encodes one file's events (one day, one type, in seq order).
func encodeFile(dir, typ string, evs []*eventv1.CommittedEvent) (FileInfo, []byte, error) {
	var buf bytes.Buffer
	// klauspost's gzip at its fastest level: every node archives every pruned event, in
	// the background beside ingest, and the standard library's default level cost
	// about 4% of a core per node at 5,000 events/s (docs/performance.md). Any gzip
	// reader reads it.
	zw, err := kgzip.NewWriterLevel(&buf, kgzip.BestSpeed)
	if err != nil {
		return FileInfo{}, nil, err
	}
	zw.Comment = formatComment // no name, no mod time: the same events give the same bytes
	bw := bufio.NewWriter(zw)
	opts := protodelim.MarshalOptions{MarshalOptions: proto.MarshalOptions{Deterministic: true}}
	info := FileInfo{
		Type: typ, Events: uint64(len(evs)), FirstSeq: evs[0].GetSeq(), LastSeq: evs[len(evs)-1].GetSeq(),
		FirstTime: evs[0].GetCommittedAt().AsTime().UTC(),
	}
	info.LastTime = info.FirstTime
	for _, ev := range evs {
		if t := ev.GetCommittedAt().AsTime().UTC(); t.After(info.LastTime) {
			info.LastTime = t
		} else if t.Before(info.FirstTime) {
			info.FirstTime = t
		}
		if _, err := opts.MarshalTo(bw, ev); err != nil {
			return FileInfo{}, nil, fmt.Errorf("archive: encode event seq %d: %w", ev.GetSeq(), err)
		}
	}
	if err := bw.Flush(); err != nil {
		return FileInfo{}, nil, err
	}
	if err := zw.Close(); err != nil {
		return FileInfo{}, nil, err
	}
	sum := sha256.Sum256(buf.Bytes())
	info.Name = fileName(dir, typ, info.FirstSeq, info.LastSeq)
	info.Bytes = int64(buf.Len())
	info.SHA256 = hex.EncodeToString(sum[:])
	return info, buf.Bytes(), nil
}

// DamagedError reports an archive object that cannot be trusted: a file whose bytes do
// not match its manifest entry or do not decode, a missing file, or a manifest that does
// not parse.
type DamagedError struct {
	Name   string // the object's name in the store
	Reason string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("archive: %s is damaged: %s", e.Name, e.Reason)
}

// DecodeFile checks a file's bytes and calls fn for each of its events, in order. It
// stops at the first error. Callers that must not act on part of a damaged file run it
// once with a fn that only checks (as Verify does) before acting.
func DecodeFile(data []byte, fn func(*eventv1.CommittedEvent) error) error {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not gzip: %w", err)
	}
	if zr.Comment != formatComment {
		return fmt.Errorf("gzip comment %q: not a crossdock archive file of this version", zr.Comment)
	}
	zr.Multistream(false)
	br := bufio.NewReader(zr)
	opts := protodelim.UnmarshalOptions{MaxSize: maxRecordBytes}
	for i := 0; ; i++ {
		ev := &eventv1.CommittedEvent{}
		err := opts.UnmarshalFrom(br, ev)
		if errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	// The gzip trailer (CRC-32 and length) is checked at the end of the stream; a stream
	// followed by anything else is not one of ours.
	if _, err := zr.Read(make([]byte, 1)); err != io.EOF {
		return fmt.Errorf("gzip stream: %v", cmp.Or(err, errors.New("data after the last record")))
	}
	return nil
}

// checkFile verifies data against its manifest entry: SHA-256 and size first, then
// every record decoded and matched against the entry's type, count, seqs and times.
func checkFile(f FileInfo, data []byte) error {
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != f.SHA256 || int64(len(data)) != f.Bytes {
		return &DamagedError{Name: f.Name, Reason: fmt.Sprintf("checksum mismatch: the manifest says %d bytes with sha256 %s, the file has %d bytes with sha256 %s",
			f.Bytes, f.SHA256, len(data), got)}
	}
	var n, prev uint64
	err := DecodeFile(data, func(ev *eventv1.CommittedEvent) error {
		n++
		s, t := ev.GetSeq(), ev.GetCommittedAt().AsTime()
		switch {
		case s <= prev || s < f.FirstSeq || s > f.LastSeq:
			return fmt.Errorf("record %d: seq %d out of order or outside %d..%d", n-1, s, f.FirstSeq, f.LastSeq)
		case ev.GetEvent().GetType() != f.Type:
			return fmt.Errorf("record %d (seq %d): type %q in a file of %q", n-1, s, ev.GetEvent().GetType(), f.Type)
		case t.Before(f.FirstTime) || t.After(f.LastTime):
			return fmt.Errorf("record %d (seq %d): commit time %s outside the file's %s..%s", n-1, s,
				t.Format(time.RFC3339Nano), f.FirstTime.Format(time.RFC3339Nano), f.LastTime.Format(time.RFC3339Nano))
		}
		prev = s
		return nil
	})
	switch {
	case err != nil:
		return &DamagedError{Name: f.Name, Reason: err.Error()}
	case n != f.Events:
		return &DamagedError{Name: f.Name, Reason: fmt.Sprintf("%d events, the manifest says %d", n, f.Events)}
	case prev != f.LastSeq:
		return &DamagedError{Name: f.Name, Reason: fmt.Sprintf("last seq %d, the manifest says %d", prev, f.LastSeq)}
	}
	return nil
}

package ledger

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
)

// Log chunks live in segment files (layout 7; DESIGN.md, "Segments"): Apply appends a
// chunk's bytes to the active segment and stores a small pointer under the chunk's l/
// key, so Badger holds the log's index and the events are in files that retention
// deletes whole. Before, chunks were Badger values in its value log, and the disk
// retention freed came back only when value log GC found a file half garbage, which
// waited for compactions: the disk moved in waves of a gigabyte (docs/performance.md).
//
// Where a chunk is stored is a node's own business: a snapshot carries the chunks, not
// the pointers, and Hash reads them through the pointers, so replicas that store the
// same log in different segments (a restored node, a node that moved chunks) are equal.

// segPtrTag starts a pointer value. A LogChunk never starts with it (its first field is
// first_seq, tag 0x08), so an l/ value is a pointer or a chunk stored inline (written by
// layout 6, or by an in-memory ledger's tests).
const segPtrTag = 0x00

// segPtrLen is the encoded size of a segPtr: tag, segment, offset, length, CRC-32C.
const segPtrLen = 1 + 8 + 8 + 4 + 4

// segmentBytes is the size at which the active segment is closed and a new one started.
// The disk held past retention is about one segment per node, and a segment is deleted
// only when no chunk in it is held. A variable for tests.
var segmentBytes int64 = 64 << 20

// relocateBelow and relocateMaxBytes: after a prune, the chunks still held in a closed
// segment of which less than relocateBelow is held, and that the prune has passed (every
// chunk in it below the highest cutoff), are copied to the active segment (at most
// relocateMaxBytes per prune), so that chunks kept for a long-lived type do not keep
// whole segments of pruned ones on disk. A segment the prune is still passing through
// is left alone: what it holds goes at the next steps anyway, and copying it (as the
// first build did) left about a third of every segment dead, held in newer segments.
// writebackBytes: every this many bytes appended to a segment, the kernel is asked to
// start writing them to disk (startWriteback), so no fsync finds megabytes dirty.
const writebackBytes = 1 << 20

const (
	relocateBelow    = 0.5
	relocateMaxBytes = 8 << 20
)

// segmentsDir is the directory of a database's segments, inside its Badger directory
// (Badger reads only its own file names there), so a database and its segments are
// created, replaced by a restore and removed together.
const segmentsDir = "segments"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segPtr says where a chunk's bytes are.
type segPtr struct {
	seg uint64
	off int64
	n   uint32
	crc uint32
}

func (p segPtr) encode() []byte {
	b := make([]byte, 0, segPtrLen)
	b = append(b, segPtrTag)
	b = binary.BigEndian.AppendUint64(b, p.seg)
	b = binary.BigEndian.AppendUint64(b, uint64(p.off))
	b = binary.BigEndian.AppendUint32(b, p.n)
	return binary.BigEndian.AppendUint32(b, p.crc)
}

// decodeSegPtr decodes an l/ value: ok is false when v is a chunk stored inline.
func decodeSegPtr(v []byte) (p segPtr, ok bool, err error) {
	if len(v) == 0 || v[0] != segPtrTag {
		return segPtr{}, false, nil
	}
	if len(v) != segPtrLen {
		return segPtr{}, false, fmt.Errorf("segment pointer of %d bytes, want %d", len(v), segPtrLen)
	}
	p = segPtr{
		seg: binary.BigEndian.Uint64(v[1:]),
		off: int64(binary.BigEndian.Uint64(v[9:])),
		n:   binary.BigEndian.Uint32(v[17:]),
		crc: binary.BigEndian.Uint32(v[21:]),
	}
	if p.off < 0 {
		return segPtr{}, false, fmt.Errorf("segment pointer with offset %d", p.off)
	}
	return p, true, nil
}

// errStopWalk ends eachPointer early without an error.
var errStopWalk = errors.New("stop")

// eachPointer calls fn with the first seq and pointer of every l/ key from lo to hi
// (inclusive; hi 0: to the end) whose value is a segment pointer. fn returning
// errStopWalk ends the walk without an error.
func eachPointer(txn *badger.Txn, lo, hi uint64, fn func(first uint64, p segPtr) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefixLog
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(logKey(lo)); it.ValidForPrefix(prefixLog); it.Next() {
		first := seqSuffix(it.Item().Key())
		if hi != 0 && first > hi {
			return nil
		}
		err := it.Item().Value(func(v []byte) error {
			p, ok, err := decodeSegPtr(v)
			if err != nil {
				return fmt.Errorf("ledger: log chunk %d: %w", first, err)
			}
			if !ok {
				return nil
			}
			return fn(first, p)
		})
		if errors.Is(err, errStopWalk) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// segFile is one segment.
type segFile struct {
	id   uint64
	f    *os.File // nil in memory
	mem  []byte   // the segment's bytes in memory (guarded by segments.mu)
	size int64    // bytes written (guarded by segments.mu; written by Apply only)
	// written is how far writeback was started (Apply only): see writebackBytes.
	written int64

	// live is how many committed l/ pointers name this segment, and liveBytes their
	// bytes (guarded by segments.mu).
	live      int
	liveBytes int64
	// lo and hi bound the first seqs of the chunks ever stored in it (Apply only).
	lo, hi uint64
	// sealed: closed, fsynced and renamed to .sealed (guarded by segments.mu).
	sealed bool
}

func (sf *segFile) span(first uint64) {
	if sf.lo == 0 || first < sf.lo {
		sf.lo = first
	}
	sf.hi = max(sf.hi, first)
}

// segments is one database's segment files. Apply appends (under the ledger's applyMu);
// readers read committed chunks concurrently.
//
// A segment no chunk is held in any more is retired: removed from the directory and
// closed once no reader that could still see a pointer into it is left. Readers pin an
// epoch before they open a Badger transaction; retiring closes the epoch, and a retired
// segment stays readable until every pin of that epoch or an earlier one is released.
type segments struct {
	dir string // "" in memory

	mu     sync.Mutex
	files  map[uint64]*segFile
	active *segFile // where Apply appends; nil until the first append
	nextID uint64
	epoch  uint64
	pins   map[uint64]int // epoch -> readers pinned in it
	graves []grave

	// Segments found empty after a commit, for the worker (Ledger.segmentWorker) to
	// remove once the commit is durable; queued is signalled when one is added or a
	// segment is closed (to seal).
	pending []uint64
	queued  chan struct{}

	relocated int64 // bytes relocate copied since open (Apply only; for tests)
}

// grave is a retired segment kept open for the readers pinned at or before epoch.
type grave struct {
	epoch uint64
	sf    *segFile
}

// ErrSegmentDamaged means a chunk's bytes are missing from its segment file or do not
// match their checksum: the data directory lost writes (an OS crash or power loss
// before Sync) or was damaged. The ledger is derived state: the store rebuilds it from
// the newest raft snapshot and the raft log (controlplane/store).
var ErrSegmentDamaged = errors.New("ledger: segment file damaged")

// A segment is NNN.seg while it may hold bytes not yet fsynced (the active one, and a
// closed one until it is synced), and NNN.sealed after: Open checks the chunks of every
// .seg file against their checksums, and trusts the .sealed ones' sizes.
const (
	segOpenExt   = ".seg"
	segSealedExt = ".sealed"
)

func segName(id uint64, sealed bool) string {
	if sealed {
		return fmt.Sprintf("%020d%s", id, segSealedExt)
	}
	return fmt.Sprintf("%020d%s", id, segOpenExt)
}

// path is sf's file name now (the caller holds s.mu).
func (s *segments) path(sf *segFile) string { return filepath.Join(s.dir, segName(sf.id, sf.sealed)) }

// openSegments opens the segments of the database in dbDir ("" in memory) and counts the
// pointers db holds into each. Segments no pointer names (left by a crash between an
// append and its commit, or retired but not yet removed) are deleted. A pointer past
// the end of its file is ErrSegmentDamaged.
func openSegments(dbDir string, db *badger.DB) (*segments, error) {
	s := &segments{files: map[uint64]*segFile{}, pins: map[uint64]int{}, nextID: 1, queued: make(chan struct{}, 1)}
	if dbDir != "" {
		s.dir = filepath.Join(dbDir, segmentsDir)
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return nil, fmt.Errorf("ledger: segments: %w", err)
		}
		ents, err := os.ReadDir(s.dir)
		if err != nil {
			return nil, fmt.Errorf("ledger: segments: %w", err)
		}
		for _, e := range ents {
			ext := filepath.Ext(e.Name())
			id, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ext), 10, 64)
			if err != nil || (ext != segOpenExt && ext != segSealedExt) {
				continue
			}
			f, err := os.Open(filepath.Join(s.dir, e.Name()))
			if err != nil {
				s.close()
				return nil, fmt.Errorf("ledger: segments: %w", err)
			}
			st, err := f.Stat()
			if err != nil {
				f.Close()
				s.close()
				return nil, fmt.Errorf("ledger: segments: %w", err)
			}
			s.files[id] = &segFile{id: id, f: f, size: st.Size(), sealed: ext == segSealedExt}
			s.nextID = max(s.nextID, id+1)
		}
	}
	err := db.View(func(txn *badger.Txn) error {
		return eachPointer(txn, 0, 0, func(first uint64, p segPtr) error {
			sf := s.files[p.seg]
			if sf == nil || p.off+int64(p.n) > sf.size {
				return fmt.Errorf("%w: chunk %d is at %d+%d in segment %d, which is missing or shorter",
					ErrSegmentDamaged, first, p.off, p.n, p.seg)
			}
			if !sf.sealed {
				// Written after its last sync, maybe: an OS crash or power loss can leave
				// the size without the bytes.
				if _, err := s.read(p); err != nil {
					return fmt.Errorf("%w (chunk %d)", err, first)
				}
			}
			sf.live++
			sf.liveBytes += int64(p.n)
			sf.span(first)
			return nil
		})
	})
	if err != nil {
		s.close()
		return nil, err
	}
	for id, sf := range s.files {
		if sf.live == 0 {
			sf.f.Close()
			if err := os.Remove(s.path(sf)); err != nil {
				s.close()
				return nil, fmt.Errorf("ledger: segments: remove unused: %w", err)
			}
			delete(s.files, id)
		}
	}
	return s, nil
}

// append stores chunk b (first is its first seq) in the active segment, starting a new
// one when it is full, and returns where. Only Apply and Restore append (never
// concurrently).
func (s *segments) append(first uint64, b []byte) (segPtr, error) {
	a := s.active
	if a == nil || (a.size > 0 && a.size+int64(len(b)) > segmentBytes) {
		var err error
		if a, err = s.roll(); err != nil {
			return segPtr{}, err
		}
	}
	p := segPtr{seg: a.id, off: a.size, n: uint32(len(b)), crc: crc32.Checksum(b, castagnoli)}
	if a.f != nil {
		if _, err := a.f.WriteAt(b, a.size); err != nil {
			return segPtr{}, fmt.Errorf("ledger: segment %d: write: %w", a.id, err)
		}
	}
	s.mu.Lock()
	if a.f == nil {
		a.mem = append(a.mem, b...)
	}
	a.size += int64(len(b))
	s.mu.Unlock()
	a.span(first)
	if a.f != nil && a.size-a.written >= writebackBytes {
		startWriteback(a.f, a.written, a.size-a.written)
		a.written = a.size
	}
	return p, nil
}

// roll starts a new active segment. The one it closes is synced and sealed in the
// background (syncAll, from Ledger.segmentWorker): an fsync of up to 64 MiB here would
// hold up every commit behind Apply.
func (s *segments) roll() (*segFile, error) {
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	s.mu.Unlock()
	sf := &segFile{id: id}
	if s.dir != "" {
		// Its directory entry is synced with it, in the background (syncAll).
		f, err := os.OpenFile(filepath.Join(s.dir, segName(id, false)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("ledger: new segment: %w", err)
		}
		sf.f = f
	}
	s.mu.Lock()
	s.files[id] = sf
	s.active = sf
	s.mu.Unlock()
	s.signal()
	return sf, nil
}

// signal wakes the background worker (Ledger.segmentWorker).
func (s *segments) signal() {
	select {
	case s.queued <- struct{}{}:
	default:
	}
}

// syncAll makes every byte appended so far durable: it fsyncs the segments not sealed,
// seals the closed ones among them (renamed to .sealed) and syncs the directory.
func (s *segments) syncAll() error {
	if s.dir == "" {
		return nil
	}
	s.mu.Lock()
	var open []*segFile
	for _, sf := range s.files {
		if !sf.sealed {
			open = append(open, sf)
		}
	}
	active := s.active
	s.mu.Unlock()
	var renamed bool
	for _, sf := range open {
		if err := sf.f.Sync(); err != nil {
			s.mu.Lock()
			gone := s.files[sf.id] != sf
			s.mu.Unlock()
			if gone {
				continue // retired meanwhile
			}
			return fmt.Errorf("ledger: segment %d: sync: %w", sf.id, err)
		}
		if sf == active {
			continue
		}
		s.mu.Lock()
		if s.files[sf.id] == sf {
			from := s.path(sf)
			sf.sealed = true
			if err := os.Rename(from, s.path(sf)); err != nil {
				sf.sealed = false
				s.mu.Unlock()
				return fmt.Errorf("ledger: seal segment %d: %w", sf.id, err)
			}
			renamed = true
		}
		s.mu.Unlock()
	}
	if renamed || len(open) > 0 {
		// New segments' entries, and the renames.
		if err := fsutil.SyncDir(s.dir); err != nil {
			return fmt.Errorf("ledger: sync segments: %w", err)
		}
	}
	return nil
}

// read returns the chunk p points at, checked against its checksum.
func (s *segments) read(p segPtr) ([]byte, error) {
	s.mu.Lock()
	sf := s.files[p.seg]
	if sf == nil {
		for _, g := range s.graves {
			if g.sf.id == p.seg {
				sf = g.sf
				break
			}
		}
	}
	var mem []byte
	if sf != nil && sf.f == nil {
		mem = sf.mem
	}
	s.mu.Unlock()
	if sf == nil {
		return nil, fmt.Errorf("%w: segment %d is gone", ErrSegmentDamaged, p.seg)
	}
	var b []byte
	if sf.f != nil {
		b = make([]byte, p.n)
		if _, err := sf.f.ReadAt(b, p.off); err != nil {
			return nil, fmt.Errorf("%w: segment %d at %d+%d: %v", ErrSegmentDamaged, p.seg, p.off, p.n, err)
		}
	} else {
		if p.off+int64(p.n) > int64(len(mem)) {
			return nil, fmt.Errorf("%w: segment %d is %d bytes, chunk at %d+%d", ErrSegmentDamaged, p.seg, len(mem), p.off, p.n)
		}
		b = mem[p.off : p.off+int64(p.n) : p.off+int64(p.n)]
	}
	if crc32.Checksum(b, castagnoli) != p.crc {
		return nil, fmt.Errorf("%w: segment %d at %d+%d: checksum mismatch", ErrSegmentDamaged, p.seg, p.off, p.n)
	}
	return b, nil
}

// resolve returns the chunk bytes of l/ value v: v itself when stored inline.
func (s *segments) resolve(v []byte) ([]byte, error) {
	p, ok, err := decodeSegPtr(v)
	if err != nil || !ok {
		return v, err
	}
	return s.read(p)
}

// segDelta counts the pointers one Apply writes and removes, per segment.
type segDelta map[uint64]struct {
	n     int
	bytes int64
}

func (d segDelta) add(p segPtr, sign int) {
	e := d[p.seg]
	e.n += sign
	e.bytes += int64(sign) * int64(p.n)
	d[p.seg] = e
}

// commit records an Apply's committed pointer changes and returns the segments no
// pointer names any more (the active one excepted), to retire.
func (s *segments) commit(d segDelta) (empty []uint64) {
	if len(d) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range d {
		sf := s.files[id]
		if sf == nil {
			continue
		}
		sf.live += e.n
		sf.liveBytes += e.bytes
		if sf.live <= 0 && sf != s.active {
			empty = append(empty, id)
		}
	}
	slices.Sort(empty)
	return empty
}

// queue hands empty segments to the retirer.
func (s *segments) queue(ids []uint64) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	s.pending = append(s.pending, ids...)
	s.mu.Unlock()
	s.signal()
}

func (s *segments) takeQueued() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.pending
	s.pending = nil
	return ids
}

// retire removes segments no pointer names. The caller has made the commits that
// removed their last pointers durable (a crash must not bring a pointer back to a
// removed file). A reader pinned before this call can still read them.
func (s *segments) retire(ids []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, id := range ids {
		sf := s.files[id]
		if sf == nil || sf.live > 0 || sf == s.active {
			continue
		}
		delete(s.files, id)
		if s.dir != "" {
			if err := os.Remove(s.path(sf)); err != nil {
				errs = append(errs, fmt.Errorf("ledger: remove segment %d: %w", id, err))
			}
		}
		s.graves = append(s.graves, grave{epoch: s.epoch, sf: sf})
	}
	s.epoch++
	s.buryLocked()
	return errors.Join(errs...)
}

// pin is taken by a reader before it opens a Badger transaction that may read chunks;
// unpin releases it.
func (s *segments) pin() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pins[s.epoch]++
	return s.epoch
}

func (s *segments) unpin(e uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pins[e]--; s.pins[e] <= 0 {
		delete(s.pins, e)
	}
	s.buryLocked()
}

// buryLocked closes the retired segments no pinned reader can see.
func (s *segments) buryLocked() {
	oldest := s.epoch
	for e := range s.pins {
		oldest = min(oldest, e)
	}
	s.graves = slices.DeleteFunc(s.graves, func(g grave) bool {
		if g.epoch < oldest {
			if g.sf.f != nil {
				g.sf.f.Close()
			}
			return true
		}
		return false
	})
}

// SegmentStats is what a ledger's segment files hold.
type SegmentStats struct {
	Files int
	// Bytes is what the files hold; HeldBytes the chunks the log still points to (the
	// rest waits for its segment to empty, or to be moved out of it).
	Bytes, HeldBytes int64
}

// Segments reports the ledger's segment files (all zero for a ledger closed or
// restoring).
func (l *Ledger) Segments() SegmentStats {
	h, err := l.acquire()
	if err != nil {
		return SegmentStats{}
	}
	defer l.release(h)
	s := h.segs
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SegmentStats{Files: len(s.files)}
	for _, sf := range s.files {
		st.Bytes += sf.size
		st.HeldBytes += sf.liveBytes
	}
	return st
}

// sparse returns the closed segments of which less than relocateBelow is held and whose
// chunks all start below passed, oldest first.
func (s *segments) sparse(passed uint64) []*segFile {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*segFile
	for _, sf := range s.files {
		if sf != s.active && sf.live > 0 && sf.hi < passed && float64(sf.liveBytes) < relocateBelow*float64(sf.size) {
			out = append(out, sf)
		}
	}
	slices.SortFunc(out, func(a, b *segFile) int { return cmp.Compare(a.id, b.id) })
	return out
}

// close closes every file (the database is closing: no reader is left).
func (s *segments) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, sf := range s.files {
		if sf.f != nil {
			errs = append(errs, sf.f.Close())
		}
	}
	for _, g := range s.graves {
		if g.sf.f != nil {
			g.sf.f.Close()
		}
	}
	s.files, s.graves, s.active = map[uint64]*segFile{}, nil, nil
	return errors.Join(errs...)
}

// logTxn is a Badger transaction with the segments its l/ pointers name: every read of
// a chunk goes through chunkValue.
type logTxn struct {
	*badger.Txn
	segs *segments
}

// chunkValue calls fn with the chunk bytes of l/ item it, read from its segment when the
// item holds a pointer. The bytes are valid only during fn.
func (t *logTxn) chunkValue(it *badger.Item, fn func(v []byte) error) error {
	return it.Value(func(v []byte) error {
		b, err := t.segs.resolve(v)
		if err != nil {
			return fmt.Errorf("ledger: log chunk %d: %w", seqSuffix(it.Key()), err)
		}
		return fn(b)
	})
}

// getChunk returns the chunk bytes stored under l/ first (a copy) and the pointer they
// were read through (ok false: stored inline); found is false when there is none.
func (t *logTxn) getChunk(first uint64) (v []byte, p segPtr, inSeg, found bool, err error) {
	raw, found, err := getValue(t.Txn, logKey(first))
	if err != nil || !found {
		return nil, segPtr{}, false, found, err
	}
	p, inSeg, err = decodeSegPtr(raw)
	if err != nil {
		return nil, segPtr{}, false, false, fmt.Errorf("ledger: log chunk %d: %w", first, err)
	}
	if !inSeg {
		return raw, segPtr{}, false, true, nil
	}
	if v, err = t.segs.read(p); err != nil {
		return nil, segPtr{}, false, false, fmt.Errorf("ledger: log chunk %d: %w", first, err)
	}
	return v, p, true, true, nil
}

// relocate copies the chunks still held in sparse segments (segments.sparse) to the
// active segment, at most relocateMaxBytes, and queues the segments it emptied for
// removal. Apply calls it after a prune's commit, under applyMu: nothing else writes
// l/ keys meanwhile. It changes where chunks are, not what the ledger holds (Hash and
// snapshots read chunks through the pointers), so it is not part of any command, and
// a crash before its commit leaves the chunks where they were.
func (l *Ledger) relocate(h *handle) error {
	cands := h.segs.sparse(highestCut(h.post.low))
	if len(cands) == 0 {
		return nil
	}
	type move struct {
		key []byte
		p   segPtr
	}
	var (
		moves []move
		bytes int64
	)
	err := h.db.View(func(txn *badger.Txn) error {
		for _, sf := range cands {
			err := eachPointer(txn, sf.lo, sf.hi, func(first uint64, p segPtr) error {
				if bytes >= relocateMaxBytes {
					return errStopWalk
				}
				if p.seg == sf.id {
					moves = append(moves, move{logKey(first), p})
					bytes += int64(p.n)
				}
				return nil
			})
			if err != nil || bytes >= relocateMaxBytes {
				return err
			}
		}
		return nil
	})
	if err != nil || len(moves) == 0 {
		return err
	}
	txn := h.db.NewTransaction(true)
	defer txn.Discard()
	d := segDelta{}
	for _, m := range moves {
		b, err := h.segs.read(m.p)
		if err != nil {
			return fmt.Errorf("ledger: log chunk %d: %w", seqSuffix(m.key), err)
		}
		np, err := h.segs.append(seqSuffix(m.key), b)
		if err != nil {
			return err
		}
		if err := txn.Set(m.key, np.encode()); err != nil {
			return fmt.Errorf("ledger: log chunk %d: %w", seqSuffix(m.key), err)
		}
		d.add(m.p, -1)
		d.add(np, 1)
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("ledger: relocate chunks: %w", err)
	}
	empty := h.segs.commit(d)
	h.segs.relocated += bytes
	l.logger.Debug("ledger: chunks moved out of sparse segments", "chunks", len(moves), "bytes", bytes, "segments_emptied", len(empty))
	l.retireSegments(h, empty)
	return nil
}

// retireSegments has segments no pointer names removed: by the worker on disk, once
// the commits that emptied them are durable; at once in memory.
func (l *Ledger) retireSegments(h *handle, ids []uint64) {
	if len(ids) == 0 {
		return
	}
	if h.dir != "" {
		h.segs.queue(ids)
		return
	}
	if err := h.segs.retire(ids); err != nil {
		l.logger.Warn("ledger: remove segments", "err", err)
	}
}

package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/ristretto/v2/z"
)

// RepairReport says what Repair found and did.
type RepairReport struct {
	Dir string
	// Damage is what Open reported; nil when the outbox was intact and Repair did
	// nothing.
	Damage *Damage
	// DamagedDir is where the damaged outbox was moved; it is kept, not deleted.
	DamagedDir string
	// FromValueLog is true when Badger could not read the damaged outbox's index (a
	// damaged table file): the records were then read from its value-log files
	// directly, and the acknowledged mark is unknown (AckedKnown false).
	FromValueLog bool
	AckedSeq     uint64
	AckedKnown   bool
	// Salvaged are the pending seqs copied into the new outbox, with their count and
	// record bytes.
	Salvaged       []SeqRange
	SalvagedEvents uint64
	SalvagedBytes  uint64
	// Lost are the seqs known to have been pending that could not be read, with their
	// count and bytes (from the chunks' keys; 0 bytes when only the gap is known).
	Lost       []SeqRange
	LostEvents uint64
	LostBytes  uint64
	// Positions are the source positions kept; PositionsLost those that could not be
	// read (their connectors start over from their configured start).
	Positions     []string
	PositionsLost []string
	// NextSeq is the seq the new outbox gives next: above every seq the old one gave.
	NextSeq uint64
}

// Repair salvages a damaged outbox: it moves opts.Dir aside to
// "<dir>.damaged-<UTC time>" (kept for inspection, never deleted), copies every record
// that reads back whole into a new outbox at opts.Dir with its seq, keeps the source
// positions and the acknowledged mark, and reports what was lost. The new outbox gives
// seqs above every seq the old one gave. An intact outbox is left alone (the report's
// Damage is nil). Run it with the agent stopped: Badger's directory lock refuses it
// otherwise. A repair that was interrupted is resumed from the directory set aside.
func Repair(opts Options) (*RepairReport, error) {
	if opts.Dir == "" {
		return nil, errors.New("outbox: repair: Options.Dir is empty")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "outbox.repair")
	dir := filepath.Clean(opts.Dir)
	work := dir + repairingSuffix
	rep := &RepairReport{Dir: dir}
	_, werr := os.Stat(work)
	_, derr := os.Stat(dir)
	switch {
	case werr == nil && errors.Is(derr, os.ErrNotExist):
		// Interrupted after the damaged outbox was moved aside: start again from it.
		aside, _ := filepath.Glob(dir + ".damaged-*")
		slices.Sort(aside)
		if len(aside) == 0 {
			return nil, fmt.Errorf("outbox: repair: %s exists but neither %s nor a %s.damaged-* directory does; nothing to repair from", work, dir, dir)
		}
		rep.DamagedDir = aside[len(aside)-1]
		log.Warn("resuming an interrupted repair", "from", rep.DamagedDir)
		if err := os.RemoveAll(work); err != nil {
			return nil, fmt.Errorf("outbox: repair: remove the unfinished %s: %w", work, err)
		}
	case werr == nil:
		// Interrupted before the damaged outbox was moved: start again.
		if err := os.RemoveAll(work); err != nil {
			return nil, fmt.Errorf("outbox: repair: remove the unfinished %s: %w", work, err)
		}
		fallthrough
	default:
		if derr != nil {
			return nil, fmt.Errorf("outbox: repair: %w", derr)
		}
		o, err := Open(Options{Dir: dir, QuotaBytes: opts.QuotaBytes, Logger: opts.Logger, MinFreeBytes: -1})
		if err == nil {
			if err := o.Close(); err != nil {
				return nil, fmt.Errorf("outbox: repair: %w", err)
			}
			return rep, nil
		}
		if !errors.As(err, &rep.Damage) {
			return nil, fmt.Errorf("outbox: repair: %w", err)
		}
		// Held while the directory is moved: an agent started meanwhile finds it in use,
		// then the work directory.
		unlock, err := lockDir(dir)
		if err != nil {
			return nil, fmt.Errorf("outbox: repair: %w", err)
		}
		// The work directory first: while it exists Open refuses, so an agent started
		// during the repair cannot create an empty outbox that reuses seqs.
		if err := os.Mkdir(work, 0o700); err != nil {
			unlock()
			return nil, fmt.Errorf("outbox: repair: %w", err)
		}
		rep.DamagedDir = dir + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
		err = os.Rename(dir, rep.DamagedDir)
		unlock()
		if err != nil {
			return nil, fmt.Errorf("outbox: repair: set the damaged outbox aside: %w", err)
		}
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return nil, fmt.Errorf("outbox: repair: %w", err)
		}
		log.Info("damaged outbox set aside", "dir", rep.DamagedDir)
	}

	if err := salvageInto(rep.DamagedDir, work, rep, log); err != nil {
		return nil, fmt.Errorf("outbox: repair: %w (the damaged outbox is in %s)", err, rep.DamagedDir)
	}
	if err := os.Rename(work, dir); err != nil {
		return nil, fmt.Errorf("outbox: repair: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("outbox: repair: %w", err)
	}
	o, err := Open(Options{Dir: dir, QuotaBytes: opts.QuotaBytes, Logger: opts.Logger, MinFreeBytes: -1})
	if err != nil {
		return nil, fmt.Errorf("outbox: repair: the new outbox does not open: %w", err)
	}
	st := o.Stats()
	if err := o.Close(); err != nil {
		return nil, fmt.Errorf("outbox: repair: %w", err)
	}
	if st.PendingEvents != rep.SalvagedEvents || st.PendingBytes != rep.SalvagedBytes {
		return nil, fmt.Errorf("outbox: repair: the new outbox holds %d events, %d bytes; %d events, %d bytes were salvaged",
			st.PendingEvents, st.PendingBytes, rep.SalvagedEvents, rep.SalvagedBytes)
	}
	rep.NextSeq = st.LastSeq + 1
	return rep, nil
}

// salvageInto writes what can be read of the damaged outbox in dir into a new outbox
// in work, record by record (nothing is held in memory but the chunks' keys), and fills
// rep.
func salvageInto(dir, work string, rep *RepairReport, log *slog.Logger) error {
	w, err := newOutboxWriter(work, log)
	if err != nil {
		return fmt.Errorf("create the new outbox in %s: %w", work, err)
	}
	sv, err := salvageIndex(dir, w, log)
	if errors.Is(err, errIndexUnreadable) {
		log.Warn("the damaged outbox's index cannot be read; reading its value log", "err", err)
		sv, err = salvageValueLog(dir, w)
	}
	if err == nil {
		err = w.finish(sv)
	}
	if err != nil {
		w.abort()
		return err
	}
	sv.report(rep)
	return nil
}

// errIndexUnreadable: Badger cannot open the damaged outbox; nothing was salvaged yet.
var errIndexUnreadable = errors.New("the index cannot be read")

// salvaged is what could be read of a damaged outbox.
type salvaged struct {
	fromValueLog  bool
	acked         uint64
	ackedKnown    bool
	floor         uint64 // the highest seq known to have been given
	chunks        []salvagedChunk
	lost          []SeqRange
	lostBytes     uint64
	positions     map[string][]byte
	positionsLost []string
	// instance is the outbox's instance id (Instance): kept, so the repaired outbox is
	// the same seq space the control plane bound the agent to.
	instance []byte
}

type salvagedChunk struct {
	m       chunkMeta
	version uint64 // value-log salvage: the Badger version, newest wins
	value   []byte // value-log salvage: in the mapped file, until written
	pending uint64 // bytes of its records above the acknowledged mark
}

// salvageIndex reads the damaged outbox through Badger: the acknowledged mark, every
// pending chunk whose records read back whole (written to w as it goes), and the
// positions. It returns an error wrapping errIndexUnreadable when Badger cannot open it.
func salvageIndex(dir string, w *outboxWriter, log *slog.Logger) (*salvaged, error) {
	tmp := &Outbox{log: log}
	rerr := &readErrors{}
	tmp.capture = rerr
	bopts := tmp.badgerOptions(dir, log.With("component", "outbox.badger"))
	if problems := checkTables(dir, bopts); len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", errIndexUnreadable, strings.Join(problems, "; "))
	}
	if p := checkNewestValueLog(dir); p != "" {
		// Badger would cut the newest value log at its corrupt entry and lose the
		// intact ones after it; it only cuts the newest, so give it a newer one.
		if err := addEmptyValueLog(dir); err != nil {
			return nil, err
		}
	}
	var db *badger.DB
	err := catch(func() error {
		var err error
		db, err = badger.Open(bopts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errIndexUnreadable, err)
	}
	defer db.Close()
	sv := &salvaged{positions: map[string][]byte{}}
	err = db.View(func(txn *badger.Txn) error {
		for _, mk := range []struct {
			key   []byte
			to    *uint64
			known *bool
		}{{ackedKey, &sv.acked, &sv.ackedKnown}, {lastKey, &sv.floor, new(bool)}} {
			item, err := txn.Get(mk.key)
			if errors.Is(err, badger.ErrKeyNotFound) {
				*mk.known = true
				continue
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", mk.key, err)
			}
			v, err := item.ValueCopy(nil)
			if err != nil || len(v) != 8 {
				return fmt.Errorf("read %s: %d bytes, %v", mk.key, len(v), err)
			}
			*mk.to, *mk.known = binary.BigEndian.Uint64(v), true
		}
		sv.floor = max(sv.floor, sv.acked)
		if item, err := txn.Get(instanceKey); err == nil {
			if sv.instance, err = item.ValueCopy(nil); err != nil {
				return fmt.Errorf("read %s: %w", instanceKey, err)
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("read %s: %w", instanceKey, err)
		}
		var buf []byte
		err := eachChunk(txn, sv.acked+1, func(m chunkMeta, item *badger.Item) (bool, error) {
			sv.floor = max(sv.floor, m.last)
			v, err := item.ValueCopy(buf[:0])
			var pending uint64
			if err == nil {
				buf = v
				pending, err = chunkBytesIn(m, v, max(sv.acked, m.first-1), m.last)
			}
			if err != nil {
				sv.lost = addRange(sv.lost, SeqRange{max(sv.acked+1, m.first), m.last})
				sv.lostBytes += uint64(m.bytes)
				rerr.pending = rerr.pending[:0]
				return true, nil
			}
			if err := w.set(chunkKey(m.last, int(m.n), int(m.bytes)), v); err != nil {
				return false, err
			}
			sv.chunks = append(sv.chunks, salvagedChunk{m: m, pending: pending})
			return true, nil
		})
		if err != nil {
			return err
		}
		return eachPosition(txn, func(name string, item *badger.Item) error {
			v, err := item.ValueCopy(nil)
			if err != nil || len(rerr.pending) > 0 {
				rerr.pending = rerr.pending[:0]
				sv.positionsLost = append(sv.positionsLost, name)
				return nil
			}
			sv.positions[name] = v
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read the damaged outbox's index: %w", err)
	}
	return sv, nil
}

// salvageValueLog reads every chunk and position from the value-log files of dir and
// writes the chunks to w. A chunk's seqs may have been given twice (a crash lost a write
// that was never acknowledged, and the seqs were given again): the newest version wins.
// Chunks acknowledged but not yet reclaimed are salvaged too (the mark is in the index);
// the control plane drops them as duplicates.
func salvageValueLog(dir string, w *outboxWriter) (*salvaged, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return nil, err
	}
	slices.SortFunc(paths, func(a, b string) int { return vlogFid(a) - vlogFid(b) })
	sv := &salvaged{fromValueLog: true, positions: map[string][]byte{}}
	posVersion := map[string]uint64{}
	var cands []salvagedChunk
	// The files stay mapped until the chosen chunks are written: candidates point
	// into them.
	var maps []*z.MmapFile
	defer func() {
		for _, mf := range maps {
			mf.Close(-1)
		}
	}()
	for _, path := range paths {
		if fi, err := os.Stat(path); err != nil || fi.Size() < vlogFileHeader {
			continue
		}
		mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
		}
		maps = append(maps, mf)
		_, serr := scanValueLog(mf.Data, func(e vlogEntry) bool {
			if e.Corrupt != nil || e.Meta&vlogBitDelete != 0 {
				return true
			}
			switch {
			case len(e.Key) > 0 && e.Key[0] == chunkPrefix:
				m, err := parseChunkKey(e.Key)
				if err != nil {
					return true
				}
				if _, err := chunkBytesIn(m, e.Value, m.first-1, m.last); err != nil {
					return true
				}
				cands = append(cands, salvagedChunk{m: m, version: e.Version, value: e.Value, pending: uint64(m.bytes)})
			case string(e.Key) == string(instanceKey):
				sv.instance = slices.Clone(e.Value)
			case strings.HasPrefix(string(e.Key), posPrefix):
				name := string(e.Key[len(posPrefix):])
				if e.Version >= posVersion[name] {
					posVersion[name], sv.positions[name] = e.Version, slices.Clone(e.Value)
				}
			}
			return true
		})
		if serr != nil && !errors.Is(serr, errVlogCorrupt) {
			return nil, fmt.Errorf("read %s: %w", filepath.Base(path), serr)
		}
	}
	// By first seq; where two chunks share seqs, the newer version stays.
	slices.SortStableFunc(cands, func(a, b salvagedChunk) int {
		if a.m.first != b.m.first {
			return cmpU64(a.m.first, b.m.first)
		}
		return cmpU64(b.version, a.version)
	})
	for _, c := range cands {
		n := len(sv.chunks)
		if n > 0 && sv.chunks[n-1].m.last >= c.m.first {
			if c.version <= sv.chunks[n-1].version {
				continue
			}
			for n > 0 && sv.chunks[n-1].m.last >= c.m.first {
				n--
			}
			sv.chunks = sv.chunks[:n]
		}
		sv.chunks = append(sv.chunks, c)
	}
	for i, c := range sv.chunks {
		if i > 0 && c.m.first > sv.chunks[i-1].m.last+1 {
			sv.lost = addRange(sv.lost, SeqRange{sv.chunks[i-1].m.last + 1, c.m.first - 1})
		}
		sv.floor = max(sv.floor, c.m.last)
		if err := w.set(chunkKey(c.m.last, int(c.m.n), int(c.m.bytes)), c.value); err != nil {
			return nil, err
		}
		sv.chunks[i].value = nil
	}
	if len(sv.chunks) > 0 {
		sv.acked = sv.chunks[0].m.first - 1
	}
	// Written: flush while the files are still mapped.
	if err := w.flush(); err != nil {
		return nil, err
	}
	return sv, nil
}

// addEmptyValueLog adds an empty value-log file after the newest one of dir.
func addEmptyValueLog(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return err
	}
	fid := 0
	for _, p := range paths {
		fid = max(fid, vlogFid(p))
	}
	path := filepath.Join(dir, fmt.Sprintf("%06d.vlog", fid+1))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, vlogFileHeader))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func vlogFid(path string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(path), ".vlog"))
	return n
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// outboxWriter writes a new outbox's entries in Badger write batches.
type outboxWriter struct {
	dir       string
	db        *badger.DB
	wb        *badger.WriteBatch
	unflushed int
}

func newOutboxWriter(dir string, log *slog.Logger) (*outboxWriter, error) {
	tmp := &Outbox{log: log}
	var db *badger.DB
	err := catch(func() error {
		var err error
		db, err = badger.Open(tmp.badgerOptions(dir, log.With("component", "outbox.badger")))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &outboxWriter{dir: dir, db: db, wb: db.NewWriteBatch()}, nil
}

// set writes an entry; v may be reused once it returns (it is copied). The batch is
// flushed every writerFlushBytes, so a large outbox is not held in memory.
func (w *outboxWriter) set(k, v []byte) error {
	if err := w.wb.SetEntry(badger.NewEntry(k, slices.Clone(v))); err != nil {
		return err
	}
	if w.unflushed += len(v); w.unflushed >= writerFlushBytes {
		return w.flush()
	}
	return nil
}

const writerFlushBytes = 8 << 20

// flush commits what was set so far.
func (w *outboxWriter) flush() error {
	if err := w.wb.Flush(); err != nil {
		return err
	}
	w.wb, w.unflushed = w.db.NewWriteBatch(), 0
	return nil
}

// finish writes the positions and the marks, commits and closes the new outbox.
func (w *outboxWriter) finish(sv *salvaged) error {
	for name, v := range sv.positions {
		if err := w.set([]byte(posPrefix+name), v); err != nil {
			return err
		}
	}
	if err := w.set(ackedKey, binary.BigEndian.AppendUint64(nil, sv.acked)); err != nil {
		return err
	}
	if err := w.set(lastKey, binary.BigEndian.AppendUint64(nil, sv.floor)); err != nil {
		return err
	}
	if len(sv.instance) > 0 {
		if err := w.set(instanceKey, sv.instance); err != nil {
			return err
		}
	}
	if err := w.wb.Flush(); err != nil {
		return err
	}
	w.wb = nil
	if err := w.db.Close(); err != nil {
		return err
	}
	return syncDir(w.dir)
}

// abort closes the new outbox after a failure (the caller reports the failure).
func (w *outboxWriter) abort() {
	if w.wb != nil {
		w.wb.Cancel()
	}
	_ = w.db.Close()
}

// report fills rep from what was salvaged.
func (sv *salvaged) report(rep *RepairReport) {
	rep.FromValueLog, rep.AckedSeq, rep.AckedKnown = sv.fromValueLog, sv.acked, sv.ackedKnown
	for _, c := range sv.chunks {
		lo := max(sv.acked, c.m.first-1)
		if lo >= c.m.last {
			continue
		}
		rep.Salvaged = addRange(rep.Salvaged, SeqRange{lo + 1, c.m.last})
		rep.SalvagedEvents += c.m.last - lo
		rep.SalvagedBytes += c.pending
	}
	rep.Lost, rep.LostEvents, rep.LostBytes = sv.lost, countSeqs(sv.lost), sv.lostBytes
	for name := range sv.positions {
		rep.Positions = append(rep.Positions, name)
	}
	slices.Sort(rep.Positions)
	rep.PositionsLost = sv.positionsLost
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

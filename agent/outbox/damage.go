package outbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// ErrDamaged is wrapped by the error Open returns when the outbox's files are damaged
// (a truncated or corrupted table or value-log file, a record that does not decode).
// The error is a *Damage that says what is damaged. Nothing is written to a damaged
// outbox: Repair salvages what is intact into a new one.
var ErrDamaged = errors.New("outbox damaged")

// SeqRange is the seqs First..Last.
type SeqRange struct{ First, Last uint64 }

func (r SeqRange) String() string {
	if r.First == r.Last {
		return strconv.FormatUint(r.First, 10)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// Damage describes a damaged outbox. It is the error Open returns (it wraps ErrDamaged).
type Damage struct {
	Dir string
	// Problems say what is damaged, naming the file where it is known.
	Problems []string
	// Unreadable are the pending seqs whose records cannot be read, with the events'
	// count and bytes (from the chunks' keys). Empty when the index of the outbox could
	// not be read at all: then nothing is known of the records.
	Unreadable      []SeqRange
	UnreadableBytes uint64
	// IntactEvents are the pending records that read back whole.
	IntactEvents uint64
}

func (d *Damage) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "outbox damaged in %s: %s", d.Dir, strings.Join(d.Problems, "; "))
	if len(d.Unreadable) > 0 {
		fmt.Fprintf(&b, "; unreadable: seqs %s (%d events, %d bytes); %d pending events are intact",
			rangesString(d.Unreadable), countSeqs(d.Unreadable), d.UnreadableBytes, d.IntactEvents)
	}
	return b.String()
}

func (d *Damage) Unwrap() error { return ErrDamaged }

func rangesString(rs []SeqRange) string {
	const most = 20
	parts := make([]string, 0, min(len(rs), most+1))
	for i, r := range rs {
		if i == most {
			parts = append(parts, fmt.Sprintf("and %d more ranges", len(rs)-most))
			break
		}
		parts = append(parts, r.String())
	}
	return strings.Join(parts, ", ")
}

func countSeqs(rs []SeqRange) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.Last - r.First + 1
	}
	return n
}

// addRange appends r to rs, merging it with the last range when they touch.
func addRange(rs []SeqRange, r SeqRange) []SeqRange {
	if n := len(rs); n > 0 && rs[n-1].Last+1 >= r.First {
		rs[n-1].Last = max(rs[n-1].Last, r.Last)
		return rs
	}
	return append(rs, r)
}

// checkTables opens every table file the MANIFEST lists and verifies its checksums,
// without Badger: Badger opens tables on its own goroutines, where a truncated table
// panics and kills the process. Table files the MANIFEST does not list are left alone
// (Badger deletes them: they are what a crash left of a compaction). It returns a
// problem per damaged file; none for a directory without a MANIFEST.
func checkTables(dir string, opts badger.Options) (problems []string) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", badger.ManifestFilename, err)}
	}
	defer f.Close()
	var mf badger.Manifest
	err = catch(func() error {
		var err error
		mf, _, err = badger.ReplayManifestFile(f, opts.ExternalMagicVersion, opts)
		return err
	})
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", badger.ManifestFilename, err)}
	}
	ids := make([]uint64, 0, len(mf.Tables))
	for id := range mf.Tables {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		path := table.NewFilename(id, dir)
		if err := checkTable(path); err != nil {
			problems = append(problems, fmt.Sprintf("%s (level %d): %v", filepath.Base(path), mf.Tables[id].Level, err))
		}
	}
	return problems
}

// checkTable opens a table file read-only and verifies its index and block checksums.
func checkTable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("listed in the MANIFEST but unreadable: %w", err)
	}
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer mf.Close(-1)
	err = catch(func() error {
		t, err := table.OpenTable(mf, table.Options{})
		if err != nil {
			return err
		}
		return t.VerifyChecksum()
	})
	if err != nil {
		return fmt.Errorf("damaged (%d bytes), its index or blocks do not check: %w", fi.Size(), err)
	}
	return nil
}

// catch runs fn and returns its error, or the panic it raised as an error.
func catch(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			msg := strings.Join(strings.Fields(fmt.Sprint(r)), " ")
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			err = fmt.Errorf("badger panicked: %s", msg)
		}
	}()
	return fn()
}

// Badger does not return an error when it cannot read a value from the value log: it
// logs "Unable to read: Key: ... Error: ...", then a line per version of the key with
// its value pointer, and hands back an empty value. The outbox catches those lines while
// it verifies its records, to name the file and offset.
var (
	reUnableToRead = regexp.MustCompile(`^Unable to read: Key: .* Error: (.*)$`)
	reValuePointer = regexp.MustCompile(`valuePointer: \{Fid:(\d+) Len:(\d+) Offset:(\d+)\}`)
)

// vlogLoss is what the value log lost, per file.
type vlogLoss struct {
	fid           uint32
	values        int
	first, last   uint32 // offsets of the first and last unreadable values
	err           string
	seqLo, seqHi  uint64
	haveSeqBounds bool
}

// readErrors collects Badger's read-error log lines during Open's verification.
type readErrors struct {
	lastErr string
	losses  map[uint32]*vlogLoss
	pending []uint32 // fids named since the last chunk was accounted
}

// capture takes a Badger error line; it reports whether the line was one of those.
func (r *readErrors) capture(msg string) bool {
	if m := reUnableToRead.FindStringSubmatch(msg); m != nil {
		r.lastErr = m[1]
		return true
	}
	m := reValuePointer.FindStringSubmatch(msg)
	if m == nil || !strings.HasPrefix(msg, "Key: ") {
		return false
	}
	fid, _ := strconv.ParseUint(m[1], 10, 32)
	off, _ := strconv.ParseUint(m[3], 10, 32)
	if r.losses == nil {
		r.losses = map[uint32]*vlogLoss{}
	}
	l := r.losses[uint32(fid)]
	if l == nil {
		l = &vlogLoss{fid: uint32(fid), first: uint32(off), err: r.lastErr}
		r.losses[uint32(fid)] = l
	}
	l.values++
	l.first, l.last = min(l.first, uint32(off)), max(l.last, uint32(off))
	r.pending = append(r.pending, uint32(fid))
	return true
}

// chunkLost attributes the value-log files named since the last call to the chunk m.
func (r *readErrors) chunkLost(m chunkMeta) {
	for _, fid := range r.pending {
		l := r.losses[fid]
		if !l.haveSeqBounds {
			l.seqLo, l.haveSeqBounds = m.first, true
		}
		l.seqLo, l.seqHi = min(l.seqLo, m.first), max(l.seqHi, m.last)
	}
	r.pending = r.pending[:0]
}

// problems describes the losses per value-log file of dir.
func (r *readErrors) problems(dir string) []string {
	fids := make([]uint32, 0, len(r.losses))
	for fid := range r.losses {
		fids = append(fids, fid)
	}
	slices.Sort(fids)
	var out []string
	for _, fid := range fids {
		l := r.losses[fid]
		name := fmt.Sprintf("%06d.vlog", fid)
		size := "missing"
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
			size = fmt.Sprintf("%d bytes", fi.Size())
		}
		s := fmt.Sprintf("%s (%s) has lost %d values between offsets %d and %d (%s)", name, size, l.values, l.first, l.last, l.err)
		if l.haveSeqBounds {
			s += fmt.Sprintf(", records of seqs %d-%d", l.seqLo, l.seqHi)
		}
		out = append(out, s)
	}
	return out
}

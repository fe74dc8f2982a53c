package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
	"github.com/crossdock/crossdock/internal/platform/mapadvise"
)

// repairingSuffix names the directory Repair builds the new outbox in.
const repairingSuffix = ".repairing"

// Open opens (creating if needed) the outbox in opts.Dir. It checks the files and reads
// back every pending record, and recovers the next seq, the acknowledged mark and the
// pending count and bytes. A damaged outbox is not opened: the error is a *Damage
// (errors.Is(err, ErrDamaged)) saying what is damaged; Repair salvages it.
func Open(opts Options) (*Outbox, error) {
	if opts.Dir == "" {
		return nil, errors.New("outbox: open: Options.Dir is empty")
	}
	if opts.QuotaBytes < 0 {
		return nil, fmt.Errorf("outbox: open: negative QuotaBytes %d", opts.QuotaBytes)
	}
	quota := uint64(opts.QuotaBytes)
	if quota == 0 {
		quota = DefaultQuotaBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	o := &Outbox{
		log:      log.With("component", "outbox"),
		quota:    quota,
		minFree:  opts.MinFreeBytes,
		free:     opts.FreeSpace,
		notifyCh: make(chan struct{}),
		spaceCh:  make(chan struct{}),
		closeCh:  make(chan struct{}),
		gcKick:   make(chan struct{}, 1),
		gcDone:   make(chan struct{}),
	}
	if o.minFree == 0 {
		o.minFree = DefaultMinFreeBytes
	}
	if o.free == nil {
		dir := opts.Dir
		o.free = func() (uint64, error) {
			n, err := fsutil.FreeBytes(dir)
			if err != nil {
				return 0, fmt.Errorf("outbox: %w", err)
			}
			return n, nil
		}
	}
	if work := filepath.Clean(opts.Dir) + repairingSuffix; exists(work) {
		return nil, &Damage{Dir: opts.Dir, Problems: []string{fmt.Sprintf(
			"a repair was interrupted (%s exists): run the repair again", filepath.Base(work))}}
	}
	bopts := o.badgerOptions(opts.Dir, log.With("component", "outbox.badger"))
	unlock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	// Badger opens table files on its own goroutines, where a damaged one panics.
	problems := checkTables(opts.Dir, bopts)
	// Badger cuts the newest value log at an entry that does not check.
	if p := checkNewestValueLog(opts.Dir); p != "" {
		problems = append(problems, p)
	}
	unlock()
	if len(problems) > 0 {
		return nil, &Damage{Dir: opts.Dir, Problems: problems}
	}
	var db *badger.DB
	err = catch(func() error {
		var err error
		db, err = badger.Open(bopts)
		return err
	})
	if err != nil {
		if openErrIsDamage(err) {
			return nil, &Damage{Dir: opts.Dir, Problems: []string{fmt.Sprintf("badger cannot open it: %v", err)}}
		}
		return nil, fmt.Errorf("outbox: open badger in %s: %w", opts.Dir, err)
	}
	o.db = db
	// Deletes plus the mark plus Badger's commit marker, below its limit.
	o.ackChunk = int(min(ackChunk, db.MaxBatchCount()-3))
	if db.MaxBatchCount() != maxTxnEntries {
		// Another platform or Badger version: Append still reports ErrBatchTooLarge
		// from Badger's own check, but MaxBatchRecords is not exact.
		o.log.Warn("badger transaction limit differs from outbox.MaxBatchRecords",
			"badger_max_entries", db.MaxBatchCount(), "assumed", maxTxnEntries)
	}
	if err := o.recover(opts.Dir); err != nil {
		if cerr := db.Close(); cerr != nil {
			o.log.Warn("close badger after failed open", "err", cerr)
		}
		return nil, err
	}
	go o.gcLoop()
	o.watched = mapadvise.Watch(opts.Dir, o.closeCh, o.log)
	o.log.Debug("outbox opened", "dir", opts.Dir, "acked_seq", o.acked, "last_seq", o.readable,
		"pending_events", o.pendingEvents, "pending_bytes", o.pendingBytes, "quota_bytes", quota)
	return o, nil
}

// recover loads the acked mark, converts an outbox of an earlier format (see
// migrateEntries) and reads every pending chunk and position, checking that each
// record decodes; it returns a *Damage naming what cannot be read.
func (o *Outbox) recover(dir string) error {
	var floor uint64
	err := o.db.View(func(txn *badger.Txn) error {
		for _, mk := range []struct {
			key []byte
			to  *uint64
		}{{ackedKey, &o.acked}, {lastKey, &floor}} {
			item, err := txn.Get(mk.key)
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				continue
			case err != nil:
				return fmt.Errorf("read %s: %w", mk.key, err)
			}
			err = item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("%s has %d bytes, want 8", mk.key, len(v))
				}
				*mk.to = binary.BigEndian.Uint64(v)
				return nil
			})
			if err != nil {
				return fmt.Errorf("read %s: %w", mk.key, err)
			}
		}
		return nil
	})
	if err != nil {
		return &Damage{Dir: dir, Problems: []string{err.Error()}}
	}
	if err := o.migrateEntries(); err != nil {
		return fmt.Errorf("outbox: convert entries of the earlier format: %w", err)
	}
	dmg := &Damage{Dir: dir}
	rerr := &readErrors{}
	o.setCapture(rerr)
	defer o.setCapture(nil)
	var chunkProblems []string
	err = o.db.View(func(txn *badger.Txn) error {
		last := o.acked
		err := eachChunk(txn, o.acked+1, func(m chunkMeta, item *badger.Item) (bool, error) {
			lo := max(o.acked, m.first-1) // the first chunk may be partly acknowledged
			if lo == m.first-1 && m.first != last+1 {
				// After a write failure that Badger partially recovered, or a repair
				// that lost records; readers skip the gap.
				o.log.Warn("outbox has a gap in seqs", "after", last, "next", m.first)
			}
			var n uint64
			err := item.Value(func(v []byte) error {
				var err error
				n, err = chunkBytesIn(m, v, lo, m.last)
				return err
			})
			last = m.last
			if err != nil {
				dmg.Unreadable = addRange(dmg.Unreadable, SeqRange{lo + 1, m.last})
				dmg.UnreadableBytes += uint64(m.bytes)
				if len(rerr.pending) == 0 {
					chunkProblems = append(chunkProblems, fmt.Sprintf("records of seqs %d-%d: %v", m.first, m.last, err))
				}
				rerr.chunkLost(m)
				return true, nil
			}
			dmg.IntactEvents += m.last - lo
			o.pendingEvents += m.last - lo
			o.pendingBytes += n
			return true, nil
		})
		if err != nil {
			return err
		}
		o.readable = max(last, floor)
		return eachPosition(txn, func(name string, item *badger.Item) error {
			err := item.Value(func(v []byte) error {
				if len(rerr.pending) > 0 {
					rerr.pending = rerr.pending[:0]
					return errors.New("value lost")
				}
				return nil
			})
			if err != nil {
				chunkProblems = append(chunkProblems, fmt.Sprintf("source position %q: %v", name, err))
			}
			return nil
		})
	})
	if err != nil {
		dmg.Problems = append(dmg.Problems, fmt.Sprintf("reading the index: %v", err))
	}
	dmg.Problems = append(dmg.Problems, rerr.problems(dir)...)
	if len(chunkProblems) > 5 {
		chunkProblems = append(chunkProblems[:5], fmt.Sprintf("and %d more", len(chunkProblems)-5))
	}
	dmg.Problems = append(dmg.Problems, chunkProblems...)
	if len(dmg.Problems) > 0 {
		return dmg
	}
	o.nextSeq = o.readable + 1
	return nil
}

// eachPosition calls fn with each source position's name and item.
func eachPosition(txn *badger.Txn, fn func(name string, item *badger.Item) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(posPrefix)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := fn(string(it.Item().Key()[len(posPrefix):]), it.Item()); err != nil {
			return err
		}
	}
	return nil
}

// setCapture makes Badger's value read errors go to c (nil: to the log).
func (o *Outbox) setCapture(c *readErrors) {
	o.capMu.Lock()
	o.capture = c
	o.capMu.Unlock()
}

// badgerError is given Badger's error log lines; it reports whether it took the line.
func (o *Outbox) badgerError(msg string) bool {
	o.capMu.Lock()
	defer o.capMu.Unlock()
	return o.capture != nil && o.capture.capture(msg)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// openErrIsDamage tells damage from the other reasons Badger fails to open: another
// process holds the directory, permissions.
func openErrIsDamage(err error) bool {
	msg := err.Error()
	return !errors.Is(err, os.ErrPermission) && !strings.Contains(msg, "Another process is using this Badger database") &&
		!strings.Contains(msg, "Cannot acquire directory lock")
}

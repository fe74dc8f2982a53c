package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Snapshot stream format (all integers big-endian):
//
//	magic   "CDXSNAP1"
//	record* u32 key length (> 0), u32 value length, key, value   keys strictly ascending
//	end     u32 0, u32 0
//	trailer u64 record count, then 32 bytes: SHA-256 of every byte before them
//
// Nothing may follow the trailer.
//
// WriteTo writes that stream compressed: "CDXSNAPZ", then one zstd stream (fastest
// level, at most a 4 MiB window) whose content is the stream above. Readers take both.
// A snapshot holds every event retention keeps; compressed it is about a fifth of the
// size (docs/performance.md), which is what every node writes each snapshot and what a
// joining node receives.
const (
	snapshotMagic  = "CDXSNAP1"
	snapshotMagicZ = "CDXSNAPZ"
)

// snapshotWindow is the zstd window WriteTo uses; readers refuse larger ones, so a
// damaged or hostile header cannot make them allocate more.
const snapshotWindow = 4 << 20

// Limits a stream is checked against before anything is allocated for a record.
const (
	maxSnapshotKey   = 65000 // Badger's largest key
	maxSnapshotValue = 256 << 20
)

const restoreSpoolPrefix = "restore-"

// restoreBatchBytes bounds the keys and values of one write batch commit in Restore.
const restoreBatchBytes = 32 << 20

var badgerPrefix = []byte("!badger!")

// Snapshot is a point-in-time view of the ledger (a Badger read transaction). Apply
// may continue while it is open; Release it when done.
type Snapshot struct {
	l     *Ledger
	h     *handle
	txn   *badger.Txn
	pin   uint64 // on h.segs
	index uint64

	mu       sync.Mutex
	released bool
	ctx      context.Context // for limit's waits
	limit    *rate.Limiter   // nil: unthrottled

	// lifted is set by Unthrottle, which also ends the wait WriteTo is in (stopWait,
	// under waitMu).
	lifted   atomic.Bool
	waitMu   sync.Mutex
	stopWait context.CancelFunc
}

// throttleBytes is how much of the stream WriteTo reads between two waits on its limit
// (the limiter's burst must be at least this).
const throttleBytes = 1 << 20

// NewSnapshotLimiter returns a limiter for Throttle: perSec bytes a second, in bursts
// of throttleBytes.
func NewSnapshotLimiter(perSec int64) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(perSec), throttleBytes)
}

// Throttle makes WriteTo read the ledger no faster than limit allows (bytes of the
// stream before compression; NewSnapshotLimiter), waiting under ctx: a raft snapshot
// reads and compresses the whole ledger, and at full speed on every node at once (they
// reach the snapshot threshold together) it kept the cores busy for seconds and
// stalled commits (docs/performance.md, the soaks of 2026-12-05). A done ctx fails
// WriteTo.
func (s *Snapshot) Throttle(ctx context.Context, limit *rate.Limiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx, s.limit = ctx, limit
}

// Unthrottle lifts Throttle's limit, from a WriteTo that is running too: the rest of
// the stream is read as fast as it can be.
func (s *Snapshot) Unthrottle() {
	s.lifted.Store(true)
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	if s.stopWait != nil {
		s.stopWait()
	}
}

// Unthrottled reports whether Unthrottle lifted the limit.
func (s *Snapshot) Unthrottled() bool { return s.lifted.Load() }

// OpenSnapshot takes a point-in-time view of the ledger. It is cheap: the stream is
// produced by WriteTo.
func (l *Ledger) OpenSnapshot() (*Snapshot, error) {
	h, err := l.acquire()
	if err != nil {
		return nil, err
	}
	pin := h.segs.pin()
	txn := h.db.NewTransaction(false)
	idx, err := getU64(txn, keyApplied)
	if err != nil {
		txn.Discard()
		h.segs.unpin(pin)
		l.release(h)
		return nil, fmt.Errorf("ledger: snapshot: %w", err)
	}
	return &Snapshot{l: l, h: h, txn: txn, pin: pin, index: idx}, nil
}

// Index is the applied index the snapshot reflects.
func (s *Snapshot) Index() uint64 { return s.index }

// WriteTo writes the snapshot stream to w.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return 0, errors.New("ledger: snapshot already released")
	}
	cw := &countingWriter{w: w}
	zbw := bufio.NewWriterSize(cw, 256<<10)
	if _, err := zbw.WriteString(snapshotMagicZ); err != nil {
		return cw.n, fmt.Errorf("ledger: snapshot: write: %w", err)
	}
	zw, err := zstd.NewWriter(zbw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(snapshotWindow))
	if err != nil {
		return cw.n, fmt.Errorf("ledger: snapshot: compressor: %w", err)
	}
	defer zw.Close()
	bw := bufio.NewWriterSize(zw, 256<<10)
	h := sha256.New()
	out := io.MultiWriter(bw, h)

	// Write errors are sticky in bw; Flush reports them.
	io.WriteString(out, snapshotMagic)
	opts := badger.DefaultIteratorOptions
	opts.PrefetchSize = 256
	it := s.txn.NewIterator(opts)
	defer it.Close()
	lt := &logTxn{Txn: s.txn, segs: s.h.segs}
	var (
		count  uint64
		rec    bytes.Buffer
		unpaid int // bytes read since the last wait on s.limit
	)
	waitCtx := s.ctx
	if s.limit != nil {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithCancel(s.ctx)
		defer cancel()
		s.waitMu.Lock()
		s.stopWait = cancel
		s.waitMu.Unlock()
	}
	for it.Rewind(); it.Valid(); it.Next() {
		for ; s.limit != nil && !s.lifted.Load() && unpaid >= throttleBytes; unpaid -= throttleBytes {
			if err := s.limit.WaitN(waitCtx, throttleBytes); err != nil {
				if s.lifted.Load() && s.ctx.Err() == nil {
					break
				}
				return cw.n, fmt.Errorf("ledger: snapshot: %w", err)
			}
		}
		item := it.Item()
		rec.Reset()
		value := item.Value
		if bytes.HasPrefix(item.Key(), prefixLog) {
			// The chunk, not where this node keeps it (segments.go).
			value = func(fn func([]byte) error) error { return lt.chunkValue(item, fn) }
		}
		err := value(func(v []byte) error {
			appendRecord(&rec, item.Key(), v)
			return nil
		})
		if err != nil {
			return cw.n, fmt.Errorf("ledger: snapshot: read %q: %w", item.Key(), err)
		}
		if _, err := out.Write(rec.Bytes()); err != nil {
			return cw.n, fmt.Errorf("ledger: snapshot: write: %w", err)
		}
		unpaid += rec.Len()
		count++
	}
	var tail [16]byte // end marker + count
	binary.BigEndian.PutUint64(tail[8:], count)
	out.Write(tail[:])
	bw.Write(h.Sum(nil))
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("ledger: snapshot: write: %w", err)
	}
	if err := zw.Close(); err != nil {
		return cw.n, fmt.Errorf("ledger: snapshot: write: %w", err)
	}
	if err := zbw.Flush(); err != nil {
		return cw.n, fmt.Errorf("ledger: snapshot: write: %w", err)
	}
	return cw.n, nil
}

// Release ends the snapshot's read transaction. It is safe to call more than once.
func (s *Snapshot) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	s.txn.Discard()
	s.h.segs.unpin(s.pin)
	s.l.release(s.h)
}

func appendRecord(b *bytes.Buffer, k, v []byte) {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(k)))
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(v)))
	b.Write(hdr[:])
	b.Write(k)
	b.Write(v)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// VerifySnapshot reads a whole snapshot stream and checks its framing, key order and
// trailer without loading it. It returns the applied index the snapshot reflects; an
// invalid stream gives an error wrapping ErrSnapshotCorrupt.
func VerifySnapshot(r io.Reader) (index uint64, err error) {
	return readSnapshot(r, nil)
}

// Restore replaces the ledger's state with a snapshot stream.
//
// The stream is verified completely first, while it is spooled (to a file in Dir, or
// to memory for an in-memory ledger); a corrupt or truncated stream returns an error
// wrapping ErrSnapshotCorrupt and changes nothing. The spool is then loaded into a new
// Badger database (Dir/db-N+1), which is synced and made live by atomically rewriting
// Dir/CURRENT; the old database is closed and deleted once its open snapshots are
// released. A crash at any point leaves either the old or the new state.
func (l *Ledger) Restore(r io.Reader) error {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	cur, err := l.acquire()
	if err != nil {
		return err
	}
	curDir := cur.dir
	l.release(cur)

	// Pass 1: verify while spooling.
	var (
		spool    io.ReadWriter
		spoolF   *os.File
		spoolBuf bytes.Buffer
	)
	if l.opts.InMemory {
		spool = &spoolBuf
	} else {
		if spoolF, err = os.CreateTemp(l.opts.Dir, restoreSpoolPrefix+"*"); err != nil {
			return fmt.Errorf("ledger: restore: spool: %w", err)
		}
		defer func() {
			spoolF.Close()
			os.Remove(spoolF.Name())
		}()
		spool = spoolF
	}
	index, err := readSnapshot(io.TeeReader(r, spool), nil)
	if err != nil {
		return err
	}
	if spoolF != nil {
		if _, err := spoolF.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("ledger: restore: rewind spool: %w", err)
		}
	}

	// Pass 2: load into a fresh database.
	newDir := ""
	if !l.opts.InMemory {
		if newDir, err = nextDBDir(curDir); err != nil {
			return err
		}
		if err := os.RemoveAll(newDir); err != nil {
			return fmt.Errorf("ledger: restore: clear %s: %w", newDir, err)
		}
	}
	nh, err := l.openHandle(newDir)
	if err != nil {
		return err
	}
	discard := func(err error) error {
		nh.remove = true
		l.closeHandle(nh)
		return err
	}
	// A write batch commits when its transaction is full, but Badger counts a value
	// that goes to the value log as its pointer: without a bound of our own, one
	// commit could carry gigabytes of large values (held in memory, and written past
	// the end of the value log file's mapping, which Badger then grows with mremap, and
	// that fails with EFAULT once mapadvise has split the mapping: restores of a 4
	// million event ledger did). So the batch is flushed every restoreBatchBytes.
	wb := nh.db.NewWriteBatch()
	batched := 0
	segs := segDelta{}
	_, err = readSnapshot(spool, func(k, v []byte) error {
		if bytes.Equal(k, keyFormat) {
			v = u64(ledgerFormat) // a layout 5 or 6 stream is a valid layout 7 (log.go)
		}
		if bytes.HasPrefix(k, prefixLog) {
			if _, ptr, err := decodeSegPtr(v); err != nil || ptr {
				return corrupt("log chunk %d is a segment pointer, not a chunk", seqSuffix(k))
			}
			p, err := nh.segs.append(seqSuffix(k), v)
			if err != nil {
				return err
			}
			segs.add(p, 1)
			v = p.encode()
		}
		if batched += len(k) + len(v); batched > restoreBatchBytes {
			if err := wb.Flush(); err != nil {
				return err
			}
			wb, batched = nh.db.NewWriteBatch(), len(k)+len(v)
		}
		return wb.Set(k, v)
	})
	if err == nil {
		err = wb.Flush()
	} else {
		wb.Cancel()
	}
	if err != nil {
		return discard(fmt.Errorf("ledger: restore: load: %w", err))
	}
	nh.segs.commit(segs)
	if err := nh.segs.syncAll(); err != nil {
		return discard(fmt.Errorf("ledger: restore: %w", err))
	}
	if err := nh.db.Sync(); err != nil {
		return discard(fmt.Errorf("ledger: restore: sync: %w", err))
	}
	var seq uint64
	if err := nh.db.View(func(txn *badger.Txn) error {
		seq, err = getU64(txn, keySeq)
		return err
	}); err != nil {
		return discard(fmt.Errorf("ledger: restore: read counters: %w", err))
	}
	if nh.post, err = loadPostings(nh.db, nh.segs, l.space); err != nil {
		return discard(fmt.Errorf("ledger: restore: %w", err))
	}
	if newDir != "" {
		if err := writeCurrent(l.opts.Dir, filepath.Base(newDir)); err != nil {
			return discard(err)
		}
	}

	l.mu.Lock()
	old := l.cur
	l.cur = nh
	l.applied.Store(index)
	l.lastSeq.Store(seq)
	l.restores.Add(1)
	closeOld := l.retireLocked(old, true)
	l.mu.Unlock()
	if closeOld {
		l.closeHandle(old)
	}
	l.notify()
	l.logger.Info("ledger: restored snapshot", "applied_index", index, "last_seq", seq)
	return nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrSnapshotCorrupt}, args...)...)
}

// hashingReader hashes and counts every byte it returns.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// readSnapshot parses and verifies a stream, calling fn (if not nil) for each record
// with slices it may keep. fn sees records before the trailer is checked: callers load
// only a stream verified before. It returns the applied index recorded in the stream.
func readSnapshot(r io.Reader, fn func(k, v []byte) error) (index uint64, err error) {
	index, _, err = readSnapshotCA(r, fn)
	return index, err
}

// readSnapshotCA is readSnapshot that also returns the cluster CA record the stream
// holds, nil when it holds none.
func readSnapshotCA(r io.Reader, fn func(k, v []byte) error) (index uint64, ca *storev1.PutCA, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if head, err := br.Peek(len(snapshotMagicZ)); err == nil && string(head) == snapshotMagicZ {
		br.Discard(len(snapshotMagicZ))
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(snapshotWindow), zstd.WithDecoderLowmem(true))
		if err != nil {
			return 0, nil, fmt.Errorf("ledger: read snapshot: decompressor: %w", err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zstdErrs{zr}, 64<<10)
	}
	hr := &hashingReader{r: br, h: sha256.New()}
	readErr := func(err error, what string) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corrupt("truncated in %s at byte %d", what, hr.n)
		}
		return fmt.Errorf("ledger: read snapshot: %w", err)
	}

	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(hr, magic); err != nil {
		return 0, nil, readErr(err, "header")
	}
	if string(magic) != snapshotMagic {
		return 0, nil, corrupt("bad magic %q, want %q (not a ledger snapshot)", magic, snapshotMagic)
	}
	var (
		hdr    [8]byte
		prev   []byte
		count  uint64
		format bool
	)
	for {
		if _, err := io.ReadFull(hr, hdr[:]); err != nil {
			return 0, nil, readErr(err, "record header")
		}
		kl, vl := binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:])
		if kl == 0 {
			if vl != 0 {
				return 0, nil, corrupt("end marker with value length %d at byte %d", vl, hr.n)
			}
			break
		}
		if kl > maxSnapshotKey || vl > maxSnapshotValue {
			return 0, nil, corrupt("record %d: key of %d or value of %d bytes is over the limit", count, kl, vl)
		}
		k := make([]byte, kl)
		if _, err := io.ReadFull(hr, k); err != nil {
			return 0, nil, readErr(err, "key")
		}
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return 0, nil, corrupt("record %d: keys out of order", count)
		}
		if bytes.HasPrefix(k, badgerPrefix) {
			return 0, nil, corrupt("record %d: reserved key prefix", count)
		}
		counter := bytes.Equal(k, keyApplied) || bytes.Equal(k, keySeq) || bytes.Equal(k, keyFormat)
		isCA := bytes.Equal(k, keyCA)
		var v []byte
		switch {
		case fn != nil || counter || isCA:
			if v, err = readN(hr, int64(vl)); err != nil {
				return 0, nil, readErr(err, "value")
			}
		default:
			if _, err := io.CopyN(io.Discard, hr, int64(vl)); err != nil {
				return 0, nil, readErr(err, "value")
			}
		}
		if counter {
			n, err := decodeU64(v)
			if err != nil {
				return 0, nil, corrupt("record %d (%s): %v", count, k, err)
			}
			switch {
			case bytes.Equal(k, keyApplied):
				index = n
			case bytes.Equal(k, keyFormat):
				if n != ledgerFormat && !ledgerFormatUpgradable(n) {
					return 0, nil, corrupt("ledger layout %d, this build reads layout %d", n, ledgerFormat)
				}
				format = true
			}
		}
		if isCA {
			ca = &storev1.PutCA{}
			if err := proto.Unmarshal(v, ca); err != nil {
				return 0, nil, corrupt("record %d (%s): %v", count, k, err)
			}
		}
		if fn != nil {
			if err := fn(k, v); err != nil {
				return 0, nil, err
			}
		}
		prev = k
		count++
	}
	if !format {
		return 0, nil, corrupt("no ledger layout record: taken by an earlier build (layout 1); this build reads layout %d", ledgerFormat)
	}
	var cnt [8]byte
	if _, err := io.ReadFull(hr, cnt[:]); err != nil {
		return 0, nil, readErr(err, "trailer")
	}
	if n := binary.BigEndian.Uint64(cnt[:]); n != count {
		return 0, nil, corrupt("trailer counts %d records, stream has %d", n, count)
	}
	want := hr.h.Sum(nil)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil {
		return 0, nil, readErr(err, "checksum")
	}
	if !bytes.Equal(got, want) {
		return 0, nil, corrupt("checksum mismatch")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err != nil {
			return 0, nil, fmt.Errorf("ledger: read snapshot: %w", err)
		}
		return 0, nil, corrupt("data after the trailer")
	}
	return index, ca, nil
}

// zstdErrs reports a damaged compressed stream as a corrupt snapshot.
type zstdErrs struct{ r io.Reader }

func (z zstdErrs) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	if err != nil && err != io.EOF {
		err = corrupt("compressed stream: %v", err)
	}
	return n, err
}

// readN reads n bytes without trusting n for the allocation: a truncated stream that
// claims a huge value fails after reading what is there.
func readN(r io.Reader, n int64) ([]byte, error) {
	if n <= 1<<20 {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	var buf bytes.Buffer
	m, err := io.CopyN(&buf, r, n)
	if err == io.EOF && m < n {
		err = io.ErrUnexpectedEOF
	}
	return buf.Bytes(), err
}

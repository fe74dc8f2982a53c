package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// DefaultListLimit is the page size of ListEvents when limit <= 0.
const DefaultListLimit = 100

// Filter selects events: all of Keys (business key name = value) and Type, when set.
// Only the first MaxIndexedKeys keys of an event, by name, can be matched, and names
// or values longer than 1 KiB are not indexed.
type Filter struct {
	Type string
	Keys map[string]string
}

// readTxn opens a read transaction of the current database and, under postings.mu,
// lets take read the in-memory index state that goes with it (see postings): the two
// describe the same applied entry. done discards the transaction and releases the
// database.
func (l *Ledger) readTxn(take func(p *postings, txn *badger.Txn) error) (txn *logTxn, done func(), err error) {
	h, err := l.acquire()
	if err != nil {
		return nil, nil, err
	}
	pin := h.segs.pin()
	h.post.mu.RLock()
	txn = &logTxn{Txn: h.db.NewTransaction(false), segs: h.segs}
	err = take(h.post, txn.Txn)
	h.post.mu.RUnlock()
	done = func() {
		txn.Discard()
		h.segs.unpin(pin)
		l.release(h)
	}
	if err != nil {
		done()
		return nil, nil, err
	}
	return txn, done, nil
}

// view runs fn in a read transaction of the current database.
func (l *Ledger) view(fn func(txn *badger.Txn) error) error {
	h, err := l.acquire()
	if err != nil {
		return err
	}
	defer l.release(h)
	return h.db.View(fn)
}

// viewLog runs fn in a read transaction of the current database that may read log
// chunks: the segments it sees stay readable until fn returns.
func (l *Ledger) viewLog(fn func(txn *logTxn) error) error {
	h, err := l.acquire()
	if err != nil {
		return err
	}
	defer l.release(h)
	pin := h.segs.pin()
	defer h.segs.unpin(pin)
	return h.db.View(func(txn *badger.Txn) error { return fn(&logTxn{Txn: txn, segs: h.segs}) })
}

// viewLogTypes is viewLog with the types the type index may list (postings.types, as of
// the transaction).
func (l *Ledger) viewLogTypes(fn func(txn *logTxn, types []string) error) error {
	var types []string
	txn, done, err := l.readTxn(func(p *postings, _ *badger.Txn) error {
		types = slices.Sorted(maps.Keys(p.types))
		return nil
	})
	if err != nil {
		return err
	}
	defer done()
	return fn(txn, types)
}

// ListEvents returns up to limit events matching f with seq >= fromSeq, in ascending
// seq order (fromSeq 0 means 1; limit <= 0 means DefaultListLimit). nextSeq is the seq
// of the next matching event after the page, to pass as fromSeq, or 0 when there is no
// further match yet (a tailer then resumes from the last seq returned + 1).
//
// With keys or a type it walks the matching indexes together (a leapfrog join: each
// index seeks to the highest seq any other index is at), so it costs about as much as
// the most selective index; without a filter it reads the log.
//
// After retention pruned events, a fromSeq of 1 or more below the cutoff of f.Type (or,
// without a type, below LowWater) returns a *PrunedError (errors.Is ErrPruned) naming
// the earliest seq and time still held; fromSeq 0 means "from the earliest held".
func (l *Ledger) ListEvents(f Filter, fromSeq uint64, limit int) (events []*eventv1.CommittedEvent, nextSeq uint64, err error) {
	asked := fromSeq
	fromSeq = max(fromSeq, 1)
	if limit <= 0 {
		limit = DefaultListLimit
	}
	names := make([]string, 0, len(f.Keys))
	for name := range f.Keys {
		names = append(names, name)
	}
	slices.Sort(names)
	keyPrefixes := make([][]byte, 0, len(names))
	for _, name := range names {
		keyPrefixes = append(keyPrefixes, keyIndexPrefix(name, f.Keys[name]))
	}
	filtered := len(keyPrefixes) > 0 || f.Type != ""

	pending := make([][]uint64, len(keyPrefixes))
	var low *storev1.LowWater
	txn, done, err := l.readTxn(func(p *postings, _ *badger.Txn) error {
		for i, k := range keyPrefixes {
			pending[i] = p.copyList(k)
		}
		low = p.low
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	defer done()
	if low != nil && asked > 0 {
		cut := low.GetSeq()
		if f.Type != "" {
			cut = typeCut(low, f.Type)
		}
		if asked < cut {
			return nil, 0, prunedError(txn, asked, cut, f.Type)
		}
	}

	err = func() error {
		start, err := chunkStart(txn, fromSeq)
		if err != nil {
			return err
		}
		// emit takes the events of chunk c from fromSeq that match f; done is true once
		// the page is full and nextSeq is known.
		emit := func(c *storev1.LogChunk) (done bool) {
			for i, ae := range c.GetEvents() {
				seq := chunkSeq(c, i)
				if seq < fromSeq || (filtered && !f.matches(ae.GetEvent())) {
					continue
				}
				if len(events) == limit {
					nextSeq = seq
					return true
				}
				events = append(events, committed(c, i))
			}
			return false
		}
		if !filtered {
			return scanLog(txn, start, emit)
		}
		j := newJoin(txn.Txn, keyPrefixes, pending, f.Type)
		defer j.close()
		for target := start; ; {
			first, ok := j.next(target)
			if !ok {
				return j.err()
			}
			c, ok, err := readChunk(txn, first)
			if err != nil {
				return err
			}
			// Retention deletes chunks but leaves the key index records naming them.
			if ok && emit(c) {
				return nil
			}
			target = first + 1
		}
	}()
	if err != nil {
		return nil, 0, err
	}
	return events, nextSeq, nil
}

// scanLog calls emit for each chunk from the one at start until it returns true.
func scanLog(txn *logTxn, start uint64, emit func(*storev1.LogChunk) bool) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefixLog
	opts.PrefetchSize = 4
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(logKey(start)); it.ValidForPrefix(prefixLog); it.Next() {
		c, err := txn.itemChunk(it.Item())
		if err != nil {
			return err
		}
		if emit(c) {
			return nil
		}
	}
	return nil
}

// join walks indexes together: next(target) is the first chunk >= target that every
// index lists (a leapfrog join: each index seeks to the highest chunk another one is
// at).
type join struct{ cursors []cursor }

// cursor walks the chunks one index lists, in ascending order; seek targets never
// decrease.
type cursor interface {
	seek(target uint64) (uint64, bool)
	close()
	error() error
}

// newJoin joins the business key indexes of keyPrefixes (pending: their unflushed
// lists, taken with txn) and the type index of typ, if set.
func newJoin(txn *badger.Txn, keyPrefixes [][]byte, pending [][]uint64, typ string) *join {
	j := &join{}
	for i, p := range keyPrefixes {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = p
		j.cursors = append(j.cursors, &postingCursor{it: txn.NewIterator(opts), prefix: p, keyLen: len(p) + 8, pend: pending[i]})
	}
	if typ != "" {
		p := typeIndexPrefix(typ)
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = p
		j.cursors = append(j.cursors, &indexCursor{it: txn.NewIterator(opts), prefix: p, keyLen: len(p) + 8})
	}
	return j
}

func (j *join) close() {
	for _, c := range j.cursors {
		c.close()
	}
}

// err returns the first error a cursor met; next reports no more chunks after one.
func (j *join) err() error {
	for _, c := range j.cursors {
		if err := c.error(); err != nil {
			return err
		}
	}
	return nil
}

func (j *join) next(target uint64) (uint64, bool) {
	for agreed, i := 0, 0; agreed < len(j.cursors); i = (i + 1) % len(j.cursors) {
		s, ok := j.cursors[i].seek(target)
		if !ok {
			return 0, false
		}
		if s == target {
			agreed++
		} else {
			target, agreed = s, 1
		}
	}
	return target, true
}

// indexCursor walks an index of one entry per chunk (the type index).
type indexCursor struct {
	it     *badger.Iterator
	prefix []byte
	keyLen int
}

// seek positions the cursor at its first seq >= target.
func (c *indexCursor) seek(target uint64) (uint64, bool) {
	if c.valid() {
		if s := seqSuffix(c.it.Item().Key()); s >= target {
			return s, true
		}
	}
	c.it.Seek(cat(c.prefix, u64(target)))
	if !c.valid() {
		return 0, false
	}
	return seqSuffix(c.it.Item().Key()), true
}

func (c *indexCursor) valid() bool {
	return c.it.ValidForPrefix(c.prefix) && len(c.it.Item().Key()) == c.keyLen
}

func (c *indexCursor) close()       { c.it.Close() }
func (c *indexCursor) error() error { return nil }

// postingCursor walks the chunks of one business key: its flushed k/ records (each
// keyed by the last chunk of its list), then its pending list.
type postingCursor struct {
	it     *badger.Iterator
	prefix []byte
	keyLen int
	pend   []uint64

	list    []uint64 // the record (or, once records ran out, the pending list) at hand
	pos     int
	records bool // false once the records are exhausted
	started bool
	err     error
}

func (c *postingCursor) seek(target uint64) (uint64, bool) {
	if !c.started {
		c.started, c.records = true, true
	}
	for c.err == nil {
		if i, _ := slices.BinarySearch(c.list[c.pos:], target); c.pos+i < len(c.list) {
			c.pos += i
			return c.list[c.pos], true
		}
		if !c.records {
			return 0, false
		}
		c.it.Seek(cat(c.prefix, u64(target)))
		c.pos = 0
		if !c.it.ValidForPrefix(c.prefix) || len(c.it.Item().Key()) != c.keyLen {
			c.list, c.records = c.pend, false
			continue
		}
		// The record's last chunk is >= target: the search above finds it.
		item := c.it.Item()
		last := seqSuffix(item.Key())
		c.err = item.Value(func(v []byte) error {
			var err error
			c.list, err = decodePosting(v, last)
			return err
		})
	}
	return 0, false
}

func (c *postingCursor) close()       { c.it.Close() }
func (c *postingCursor) error() error { return c.err }

// EventByID looks an event up by its id among every agent's events: ids are unique
// within one agent's events, so several agents' events may share one; the one with
// the lowest seq is returned.
func (l *Ledger) EventByID(id string) (*eventv1.CommittedEvent, bool, error) {
	agents, err := l.Agents()
	if err != nil {
		return nil, false, err
	}
	var (
		found  *eventv1.CommittedEvent
		pruned error
	)
	for _, a := range agents {
		ev, ok, err := l.AgentEventByID(a.GetId(), id)
		if errors.Is(err, ErrPruned) {
			pruned = err
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if ok && (found == nil || ev.GetSeq() < found.GetSeq()) {
			found = ev
		}
	}
	if found == nil && pruned != nil {
		return nil, false, pruned
	}
	return found, found != nil, nil
}

// AgentEventByID looks up the event agent committed with id.
func (l *Ledger) AgentEventByID(agent, id string) (*eventv1.CommittedEvent, bool, error) {
	k := idKey(agent, id)
	if k == nil {
		return nil, false, nil
	}
	var (
		seq uint64
		ok  bool
	)
	var low *storev1.LowWater
	txn, done, err := l.readTxn(func(p *postings, txn *badger.Txn) error {
		var err error
		seq, ok, err = p.idSeq(txn, k)
		low = p.low
		return err
	})
	if err != nil {
		return nil, false, err
	}
	defer done()
	if !ok {
		return nil, false, nil
	}
	ev, ok, err := eventAt(txn, seq)
	if err != nil {
		return nil, false, err
	}
	if !ok && low != nil {
		// Ids outlive their events (the dedup window is longer than retention).
		e := &PrunedError{ID: id, Seq: low.GetSeq()}
		if h, ok, err := firstHeld(txn, low.GetSeq()); err == nil && ok {
			e.Seq, e.At = h.seq, h.at
		}
		return nil, false, e
	}
	if !ok || ev.GetEvent().GetId() != id {
		return nil, false, fmt.Errorf("ledger: id index names seq %d for %q, which the log does not hold", seq, id)
	}
	return ev, true, nil
}

// Agent returns an agent's record.
func (l *Ledger) Agent(id string) (*storev1.AgentRecord, bool, error) {
	rec := &storev1.AgentRecord{}
	ok, err := l.getProto(agentKey(id), rec)
	if !ok {
		rec = nil
	}
	return rec, ok, err
}

// Agents returns every agent record, sorted by id.
func (l *Ledger) Agents() ([]*storev1.AgentRecord, error) {
	var out []*storev1.AgentRecord
	err := l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixAgent
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			rec := &storev1.AgentRecord{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, rec) }); err != nil {
				return fmt.Errorf("ledger: decode agent %q: %w", it.Item().Key(), err)
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// Token returns an enrollment token's record.
func (l *Ledger) Token(id string) (*storev1.TokenRecord, bool, error) {
	rec := &storev1.TokenRecord{}
	ok, err := l.getProto(tokenKey(id), rec)
	if !ok {
		rec = nil
	}
	return rec, ok, err
}

// AdminTokenHash returns the SHA-256 of an admin token's secret.
func (l *Ledger) AdminTokenHash(id string) ([]byte, bool, error) {
	var t storev1.PutAdminToken
	ok, err := l.getProto(adminTokenKey(id), &t)
	if !ok {
		return nil, false, err
	}
	return t.GetSecretSha256(), true, nil
}

// CA returns the cluster CA's certificate and key; ok is false before PUT_CA.
func (l *Ledger) CA() (certPEM, keyPEM string, ok bool, err error) {
	var ca storev1.PutCA
	ok, err = l.getProto(keyCA, &ca)
	if !ok {
		return "", "", false, err
	}
	return ca.GetCertPem(), ca.GetKeyPem(), true, nil
}

func (l *Ledger) getProto(k []byte, m proto.Message) (bool, error) {
	var ok bool
	err := l.view(func(txn *badger.Txn) error {
		var err error
		ok, err = getProto(txn, k, m)
		return err
	})
	return ok, err
}

// Hash is the hex SHA-256 of every key and value in key order (the same framing as a
// snapshot's records), then of the pending key index lists (postings), which every
// replica at the same applied index holds too. Two replicas that applied the same log
// have the same Hash.
func (l *Ledger) Hash() (string, error) {
	h := sha256.New()
	var (
		pending    map[string][]uint64
		pendingIDs map[string]uint64
		flushed    uint64
	)
	txn, done, err := l.readTxn(func(p *postings, _ *badger.Txn) error {
		pending = make(map[string][]uint64, len(p.lists))
		for k, l := range p.lists {
			pending[k] = slices.Clone(l.chunks)
		}
		pendingIDs = make(map[string]uint64, p.idCount)
		p.eachPendingID(func(k string, s uint64) { pendingIDs[k] = s })
		flushed = p.flushed
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("ledger: hash: %w", err)
	}
	defer done()

	it := txn.NewIterator(badger.DefaultIteratorOptions)
	defer it.Close()
	var buf bytes.Buffer
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err == nil && bytes.HasPrefix(it.Item().Key(), prefixLog) {
			v, err = txn.segs.resolve(v) // the chunk, wherever this node keeps it
		}
		if err != nil {
			return "", fmt.Errorf("ledger: hash: %w", err)
		}
		buf.Reset()
		appendRecord(&buf, it.Item().Key(), v)
		h.Write(buf.Bytes())
	}
	buf.Reset()
	appendRecord(&buf, []byte("pending key index after"), u64(flushed))
	h.Write(buf.Bytes())
	for _, p := range slices.Sorted(maps.Keys(pending)) {
		buf.Reset()
		appendRecord(&buf, []byte(p), encodePosting(pending[p]))
		h.Write(buf.Bytes())
	}
	for _, k := range slices.Sorted(maps.Keys(pendingIDs)) {
		buf.Reset()
		appendRecord(&buf, []byte(k), u64(pendingIDs[k]))
		h.Write(buf.Bytes())
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

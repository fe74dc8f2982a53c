package retention

import (
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/crossdock/crossdock/controlplane/ledger"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// DefaultCompactKeys is the most (type, keys) of compact types the leader follows
// (Config.CompactKeys, --prune-compact-keys): 35-56 bytes each on the leader
// (docs/operations.md, "What a node's memory holds").
const DefaultCompactKeys = 4_000_000

// maxListed is the most seqs a PRUNE_LEDGER lists in compact_seqs (about 5 bytes each,
// in every step's command). A prune that would list more writes the newest pruned
// event of every key instead, as without following.
const maxListed = 8192

// followBudget and followBatch bound what one interval reads of the log to follow it,
// and one read transaction of that. A new leader over a large retained log catches up
// over several intervals; its prunes meanwhile compact every key.
const (
	followBudget = 1_000_000
	followBatch  = 50_000
)

// keyID identifies a compacted key (two independently seeded 64-bit hashes of its
// lc/ key: collisions between distinct keys are out of reach).
type keyID [2]uint64

// compactFollower is the leader's record of the newest event the log holds of each
// (type, keys) of the compact types, read from the log in seq order from the low-water
// mark at the time it started (ledger.CompactedKeys). A prune step writes a compacted
// record (lc/) for each key it removes events of; a key whose newest event is still
// held needs none yet: the log's event replaces it for every reader, and the key gets
// its record when that event goes. Told which keys those are, the prune's Apply writes
// only the others (compact_listed): with keys that change within the retention period
// (stock levels), almost none, where it wrote one per pruned event. Those writes held
// up the commits behind each step (docs/performance.md, thirteenth session).
//
// It is sound whatever it has not read: a key is left out of the list only when the
// follower saw an event of it at or after the type's cutoff (an event the log holds
// until a later prune, which lists or skips it the same way), and lists nothing
// unless it has read every event below the cutoffs it lists for. Only the leader keeps
// one; what it decided travels in the command, so every node writes the same records.
type compactFollower struct {
	types []string           // the compact types followed, sorted
	next  uint64             // the first seq not read yet
	keys  []map[keyID]uint64 // per type (index in types): key -> newest seq read
	seeds [2]maphash.Seed
	limit int  // most keys followed
	over  bool // more keys than limit: following stopped
}

func newCompactFollower(limit int) *compactFollower {
	return &compactFollower{limit: limit}
}

func (f *compactFollower) id(key []byte) keyID {
	return keyID{maphash.Bytes(f.seeds[0], key), maphash.Bytes(f.seeds[1], key)}
}

// size is the number of keys followed.
func (f *compactFollower) size() int {
	n := 0
	for _, m := range f.keys {
		n += len(m)
	}
	return n
}

// follow reads the log from where it stopped, at most about budget events. Other
// compact types start it over, from the lowest of their cutoffs in the ledger.
func (f *compactFollower) follow(l *ledger.Ledger, types []string, budget int) error {
	if !slices.Equal(types, f.types) {
		lw, err := l.Retention()
		if err != nil {
			return err
		}
		from := uint64(0)
		for i, t := range types {
			if c := ledger.TypeCutoff(lw, t); i == 0 || c < from {
				from = c
			}
		}
		*f = compactFollower{types: slices.Clone(types), next: max(from, 1), limit: f.limit,
			seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
		for range types {
			f.keys = append(f.keys, map[keyID]uint64{})
		}
	}
	if f.over {
		return nil
	}
	for read := 0; read < budget; {
		next, more, err := l.CompactedKeys(f.types, f.next, followBatch, func(seq uint64, typ string, key []byte) {
			read++
			if i, ok := slices.BinarySearch(f.types, typ); ok {
				f.keys[i][f.id(key)] = seq // in seq order: the newest stays
			}
		})
		if err != nil {
			return fmt.Errorf("retention: follow the log for compaction from seq %d: %w", f.next, err)
		}
		f.next = next
		if f.size() > f.limit {
			f.over, f.keys = true, nil
			return fmt.Errorf("retention: over %d keys of compact types %v: every pruned key is compacted until the next leadership (raise --prune-compact-keys)", f.limit, f.types)
		}
		if !more {
			break
		}
	}
	return nil
}

// list returns the seqs m may list in compact_seqs: per key of a compact type, its
// newest event when that is below its type's cutoff in m. ok is false when m cannot
// list (the follower has not read up to m's cutoffs, follows other types or stopped,
// or the list would be over maxListed): m then compacts every key it prunes. Keys
// whose newest event is below the low-water lw are forgotten: that event went in a
// prune that wrote its record.
func (f *compactFollower) list(m *storev1.PruneLedger, lw *storev1.LowWater) (seqs []uint64, ok bool) {
	if f.over || len(f.types) == 0 || !slices.Equal(slices.Sorted(slices.Values(m.GetCompact())), f.types) {
		return nil, false
	}
	cuts, lows := make([]uint64, len(f.types)), make([]uint64, len(f.types))
	for i, t := range f.types {
		cuts[i], lows[i] = cutoff(m, t), ledger.TypeCutoff(lw, t)
		if f.next < cuts[i] {
			return nil, false
		}
	}
	for i, keys := range f.keys {
		for id, seq := range keys {
			switch {
			case seq < lows[i]:
				delete(keys, id)
			case seq < cuts[i]:
				seqs = append(seqs, seq)
			}
		}
	}
	if len(seqs) > maxListed {
		return nil, false
	}
	slices.Sort(seqs)
	return seqs, true
}

// cutoff is m's cutoff for typ: its own, else the default.
func cutoff(m *storev1.PruneLedger, typ string) uint64 {
	for _, c := range m.GetTypes() {
		if c.GetType() == typ {
			return c.GetBelow()
		}
	}
	return m.GetDefaultBelow()
}

// trimListed drops from m's list the seqs below low (pruned by the steps so far), so
// each step's command carries only what is left.
func trimListed(m *storev1.PruneLedger, low uint64) {
	if !m.GetCompactListed() {
		return
	}
	i, _ := slices.BinarySearch(m.CompactSeqs, low)
	m.CompactSeqs = m.CompactSeqs[i:]
}

package views

import (
	"fmt"
	"slices"
	"strings"

	"github.com/crossdock/crossdock/controlplane/ledger"
)

// state is what the views hold. Strings that repeat across entries (locations, price
// lists, currencies, units) are interned once and referred to by a uint32; a SKU's
// entries sit together in one skuData. Guarded by Views.mu.
type state struct {
	strs     interner
	skus     map[string]uint32
	skuNames []string
	data     []skuData

	// itemOrder is the SKUs with an item, sorted; itemNew the ones added since it was
	// last merged (Items merges them).
	itemOrder []string
	itemNew   []string

	// longs holds the quantities of levels whose three quantities exceed inlineNums
	// bytes; a level keeps its slot.
	longs [][3]string

	nLevels, nPrices int
	rv               rawView // reused by fold
	// merging: fold leaves an entry alone when it holds an event at or after the one
	// folded (set while the compacted base is merged into views that hold newer events
	// of some keys; see Views.follow).
	merging bool
}

type skuData struct {
	levels []level // sorted by location name
	prices []price
	item   *item
}

// level is one (sku, location) entry: 64 bytes and no pointers, so updating one
// allocates nothing and the garbage collector does not scan the levels. The three
// quantities sit in nums when they fit (they almost always do: "120", "5", "115");
// longer ones go to state.longs, in a slot the entry keeps.
type level struct {
	nums          [inlineNums]byte // on hand, allocated and available, concatenated
	lOn, lAl, lAv uint8            // their lengths in nums
	seq           uint64
	at            int64 // commit time, unix nanoseconds
	occ           int64 // occurred_at, unix nanoseconds (0: unset)
	loc, uom      uint32
	long          uint32 // 1 + index in state.longs while the quantities are there; 0: in nums
}

const inlineNums = 21 // with the three lengths, 24 bytes: level is 64

// quantities returns on hand, allocated and available.
func (st *state) quantities(l *level) (onHand, allocated, available string) {
	if l.long != 0 {
		q := &st.longs[l.long-1]
		return q[0], q[1], q[2]
	}
	b := l.nums[:]
	return string(b[:l.lOn]), string(b[l.lOn : l.lOn+l.lAl]), string(b[l.lOn+l.lAl : l.lOn+l.lAl+l.lAv])
}

type price struct {
	amount    string
	from, to  int64 // validity, unix nanoseconds (0: open)
	seq       uint64
	at, occ   int64
	list, cur uint32
}

func (p *price) validAt(now int64) bool {
	return (p.from == 0 || p.from <= now) && (p.to == 0 || now < p.to)
}

type item struct {
	name, desc, gtin string
	uom              uint32
	seq              uint64
	at, occ          int64
}

func newState() *state {
	return &state{strs: newInterner(), skus: map[string]uint32{}}
}

// sku returns a SKU's entries, nil when it has none.
func (st *state) sku(s string) *skuData {
	id, ok := st.skus[s]
	if !ok {
		return nil
	}
	return &st.data[id]
}

// skuOf returns a SKU's entries, adding the SKU (copying b) when it is new.
func (st *state) skuOf(b []byte) *skuData {
	if id, ok := st.skus[string(b)]; ok {
		return &st.data[id]
	}
	s := string(b)
	st.skus[s] = uint32(len(st.data))
	st.skuNames = append(st.skuNames, s)
	st.data = append(st.data, skuData{})
	return &st.data[len(st.data)-1]
}

// newer reports whether an event that occurred at occ replaces an entry that occurred
// at held: not when both are set and the event is older.
func newer(occ, held int64) bool { return occ == 0 || held == 0 || occ >= held }

// fold applies one committed event. Events of other types cost one look at their type.
func (st *state) fold(ev ledger.RawEvent) error {
	rv := &st.rv
	if err := decodeEvent(ev.Event, rv); err != nil {
		return fmt.Errorf("views: event %d: %w", ev.Seq, err)
	}
	if rv.kind == 0 || len(rv.str[1]) == 0 {
		return nil
	}
	at := toNanos(ev.CommittedAt)
	switch rv.kind {
	case fieldPayloadLevel:
		if len(rv.str[2]) == 0 {
			return nil // not a valid level: the ledger does not hold one
		}
		d := st.skuOf(rv.str[1])
		loc := st.strs.id(rv.str[2])
		i := slices.IndexFunc(d.levels, func(l level) bool { return l.loc == loc })
		if i < 0 {
			name := st.strs.get(loc)
			i, _ = slices.BinarySearchFunc(d.levels, name, func(l level, n string) int { return strings.Compare(st.strs.get(l.loc), n) })
			// Grown by exactly one: a SKU gains locations rarely, and spare capacity
			// would be most of the memory of a SKU held at a few locations.
			grown := make([]level, len(d.levels)+1)
			copy(grown, d.levels[:i])
			copy(grown[i+1:], d.levels[i:])
			grown[i] = level{loc: loc}
			d.levels = grown
			st.nLevels++
		} else if !newer(rv.occurred, d.levels[i].occ) || (st.merging && d.levels[i].seq >= ev.Seq) {
			return nil
		}
		l := &d.levels[i]
		if n := len(rv.str[3]) + len(rv.str[4]) + len(rv.str[5]); n <= inlineNums {
			l.long = 0
			m := copy(l.nums[:], rv.str[3])
			m += copy(l.nums[m:], rv.str[4])
			copy(l.nums[m:], rv.str[5])
			l.lOn, l.lAl, l.lAv = uint8(len(rv.str[3])), uint8(len(rv.str[4])), uint8(len(rv.str[5]))
		} else {
			if l.long == 0 {
				st.longs = append(st.longs, [3]string{})
				l.long = uint32(len(st.longs))
			}
			st.longs[l.long-1] = [3]string{string(rv.str[3]), string(rv.str[4]), string(rv.str[5])}
		}
		l.uom = st.strs.id(rv.str[6])
		l.seq, l.at, l.occ = ev.Seq, at, rv.occurred
	case fieldPayloadPrice:
		d := st.skuOf(rv.str[1])
		list := st.strs.id(rv.str[2])
		i := slices.IndexFunc(d.prices, func(p price) bool { return p.list == list && p.from == rv.from })
		if i < 0 {
			d.prices = append(d.prices, price{list: list, from: rv.from})
			i = len(d.prices) - 1
			st.nPrices++
		} else if !newer(rv.occurred, d.prices[i].occ) || (st.merging && d.prices[i].seq >= ev.Seq) {
			return nil
		}
		p := &d.prices[i]
		p.cur = st.strs.id(rv.str[3])
		p.amount = string(rv.str[4])
		p.to, p.seq, p.at, p.occ = rv.to, ev.Seq, at, rv.occurred
		// Prices of this list whose validity ended by this commit are not served
		// again: drop them (the commit time is the same on every node).
		before := len(d.prices)
		d.prices = slices.DeleteFunc(d.prices, func(p price) bool { return p.list == list && p.to != 0 && p.to <= at })
		st.nPrices -= before - len(d.prices)
	case fieldPayloadItem:
		d := st.skuOf(rv.str[1])
		if d.item == nil {
			d.item = &item{}
			st.itemNew = append(st.itemNew, st.skuNames[st.skus[string(rv.str[1])]])
		} else if !newer(rv.occurred, d.item.occ) || (st.merging && d.item.seq >= ev.Seq) {
			return nil
		}
		it := d.item
		it.name, it.desc, it.gtin = string(rv.str[2]), string(rv.str[3]), string(rv.str[5])
		it.uom = st.strs.id(rv.str[4])
		it.seq, it.at, it.occ = ev.Seq, at, rv.occurred
	}
	return nil
}

// mergeItems merges the SKUs of new items into itemOrder.
func (st *state) mergeItems() {
	if len(st.itemNew) == 0 {
		return
	}
	slices.Sort(st.itemNew)
	merged := make([]string, 0, len(st.itemOrder)+len(st.itemNew))
	a, b := st.itemOrder, st.itemNew
	for len(a) > 0 && len(b) > 0 {
		if a[0] < b[0] {
			merged, a = append(merged, a[0]), a[1:]
		} else {
			merged, b = append(merged, b[0]), b[1:]
		}
	}
	st.itemOrder = append(append(merged, a...), b...)
	st.itemNew = nil
}

// interner maps strings that repeat (locations, price lists, currencies, units) to
// small ids. Ids are given in order of first appearance, which differs between a
// live node and one rebuilt from a compacted base; nothing outside the state sees them.
type interner struct {
	ids  map[string]uint32
	strs []string
}

func newInterner() interner {
	return interner{ids: map[string]uint32{"": 0}, strs: []string{""}}
}

func (in *interner) id(b []byte) uint32 {
	if id, ok := in.ids[string(b)]; ok {
		return id
	}
	s := string(b)
	id := uint32(len(in.strs))
	in.ids[s] = id
	in.strs = append(in.strs, s)
	return id
}

func (in *interner) lookup(s string) (uint32, bool) {
	id, ok := in.ids[s]
	return id, ok
}

func (in *interner) get(id uint32) string { return in.strs[id] }

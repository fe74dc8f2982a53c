package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// buildStream frames records as a snapshot stream, with a correct trailer if valid.
func buildStream(recs [][2]string, valid bool) []byte {
	var b bytes.Buffer
	b.WriteString(snapshotMagic)
	for _, r := range recs {
		appendRecord(&b, []byte(r[0]), []byte(r[1]))
	}
	var tail [16]byte
	binary.BigEndian.PutUint64(tail[8:], uint64(len(recs)))
	b.Write(tail[:])
	sum := sha256.Sum256(b.Bytes())
	if !valid {
		sum[0] ^= 1
	}
	b.Write(sum[:])
	return b.Bytes()
}

var (
	fuzzValidOnce sync.Once
	fuzzValid     []byte
)

// FuzzRestore feeds arbitrary bytes to Restore, which must refuse them without
// panicking and without changing the state, and flips one byte of a valid snapshot,
// which must always be refused.
func FuzzRestore(f *testing.F) {
	target, err := Open(Options{InMemory: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { target.Close() })
	tl := &raftLog{t: f}
	tl.ingest(target, "t", agentEvent(1, "t1", "sku", "T"))
	hash, index := mustHash(f, target), target.AppliedIndex()

	fuzzValidOnce.Do(func() {
		src, err := Open(Options{InMemory: true})
		if err != nil {
			f.Fatal(err)
		}
		defer src.Close()
		lg := &raftLog{t: f}
		lg.ingest(src, "a1", agentEvent(1, "e1", "sku", "S1"), agentEvent(2, "e2"))
		lg.apply(src, command(f, storev1.CommandType_COMMAND_TYPE_PUT_CA, &storev1.PutCA{CertPem: "c", KeyPem: "k"}))
		fuzzValid = snapshotBytes(f, src)
	})
	f.Add(fuzzValid[:len(fuzzValid)-1], uint32(0), byte(0))
	f.Add([]byte(snapshotMagic), uint32(9), byte(1))
	f.Add(buildStream([][2]string{{"a", "1"}, {"b", "2"}}, false), uint32(len(fuzzValid)-1), byte(0x80))

	f.Fuzz(func(t *testing.T, data []byte, pos uint32, mask byte) {
		err := target.Restore(bytes.NewReader(data))
		if err == nil {
			// Only a well-formed stream with a correct checksum gets here; put the
			// target back so every input starts from the same state.
			if _, verr := VerifySnapshot(bytes.NewReader(data)); verr != nil {
				t.Fatalf("Restore accepted a stream VerifySnapshot refuses: %v", verr)
			}
			restoreTarget(t, target, tl)
			hash = mustHash(t, target)
		} else if !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("Restore of a byte slice failed with a non-corruption error: %v", err)
		} else if mustHash(t, target) != hash || target.AppliedIndex() != index {
			t.Fatal("a refused Restore changed the state")
		}

		if mask == 0 {
			return
		}
		flipped := slices.Clone(fuzzValid)
		flipped[int(pos)%len(flipped)] ^= mask
		if err := target.Restore(bytes.NewReader(flipped)); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("valid snapshot with byte %d ^ %#x: Restore = %v, want ErrSnapshotCorrupt", int(pos)%len(flipped), mask, err)
		}
		if mustHash(t, target) != hash {
			t.Fatal("a refused Restore changed the state")
		}
	})
}

// restoreTarget resets the fuzz target to its initial state by replaying its log.
func restoreTarget(t *testing.T, target *Ledger, tl *raftLog) {
	fresh, err := Open(Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for i, cmd := range tl.cmds {
		if _, err := fresh.Apply(uint64(i+1), at(uint64(i+1)), cmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := target.Restore(bytes.NewReader(snapshotBytes(t, fresh))); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkApplyIngest(b *testing.B) {
	const batchSize = 500
	l := newLedger(b, true)
	// Events of about 256 bytes encoded, like a typical inventory level.
	mk := func(n int) *storev1.AgentEvent {
		ae := agentEvent(uint64(n), fmt.Sprintf("agent-0001/erp-main/lsn-%012d", n),
			"sku", fmt.Sprintf("SKU-%06d", n%5000), "location", fmt.Sprintf("WH-%02d", n%12))
		ae.Event.GetInventoryLevel().Sku = ae.Event.Keys["sku"]
		ae.Event.GetInventoryLevel().UnitOfMeasure = strings.Repeat("E", 120)
		return ae
	}
	cmds := make([]*storev1.Command, b.N)
	n := 0
	for i := range cmds {
		evs := make([]*storev1.AgentEvent, batchSize)
		for j := range evs {
			n++
			evs[j] = mk(n)
		}
		cmds[i] = ingestCmd(b, "agent-0001", evs...)
	}
	b.ResetTimer()
	for i, cmd := range cmds {
		res, err := l.Apply(uint64(i+1), at(uint64(i+1)), cmd)
		if err != nil {
			b.Fatal(err)
		}
		if res.(*storev1.IngestResult).GetCommitted() != batchSize {
			b.Fatalf("committed %v", res)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "events/s")
}

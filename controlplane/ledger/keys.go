package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Key layout (see DESIGN.md). Variable parts that precede a seq are length-prefixed so
// that one prefix selects exactly one (name, value) pair whatever bytes they contain.
var (
	keyApplied = []byte("m/applied") // u64BE raft index of the last applied command
	keySeq     = []byte("m/seq")     // u64BE last global event seq
	keyCA      = []byte("ca")        // PutCA

	prefixLog        = []byte("l/")   // + u64BE(seq) -> CommittedEvent
	prefixID         = []byte("i/")   // + u16BE(len)+id + agent: an event's id key, held in id runs (idruns.go), not a Badger key
	prefixLongID     = []byte("ih/")  // + sha256(agent, 0, id): the id key when id and agent exceed maxKeyPart
	prefixKey        = []byte("k/")   // + u16BE(len)+name + u32BE(len)+value + u64BE(seq) -> empty
	prefixType       = []byte("t/")   // + u16BE(len)+type + u64BE(seq) -> empty
	prefixAgent      = []byte("a/")   // + agent id -> AgentRecord
	prefixToken      = []byte("tok/") // + token id -> TokenRecord
	prefixAdminToken = []byte("adm/") // + token id -> PutAdminToken
	prefixNode       = []byte("n/")   // + node id -> NodeRecord
)

// maxKeyPart bounds the variable part of a key (ids, key names and values, types).
// Badger refuses keys over 65,000 bytes; longer parts are hashed (event ids) or not
// indexed (business keys, types), so no input makes Apply fail.
const maxKeyPart = 1024

func cat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func logKey(seq uint64) []byte { return cat(prefixLog, u64(seq)) }

// idKey is the id index key of an event id committed by agent; nil for an empty id
// (not indexed). Ids are deduplicated within the committing agent's own space, so the
// key holds both: the id first (length-prefixed, so an id is never a prefix of another
// key's id), then the agent. Ids lead because they are random: a run's keys then sort
// by their first bytes after the common prefix (sortedIDs). A key that would exceed
// maxKeyPart is hashed.
func idKey(agent, id string) []byte {
	if id == "" {
		return nil
	}
	if len(id)+len(agent) > maxKeyPart {
		h := sha256.New()
		h.Write([]byte(agent))
		h.Write([]byte{0})
		h.Write([]byte(id))
		return h.Sum(append([]byte(nil), prefixLongID...))
	}
	b := make([]byte, 0, len(prefixID)+2+len(id)+len(agent))
	b = append(b, prefixID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	return append(b, agent...)
}

// keyIndexPrefix selects the index entries of one business key name=value.
func keyIndexPrefix(name, value string) []byte { return appendKeyIndexPrefix(nil, name, value) }

func appendKeyIndexPrefix(b []byte, name, value string) []byte {
	b = append(b, prefixKey...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(value)))
	return append(b, value...)
}

func typeIndexPrefix(typ string) []byte { return appendTypeIndexPrefix(nil, typ) }

func appendTypeIndexPrefix(b []byte, typ string) []byte {
	b = append(b, prefixType...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(typ)))
	return append(b, typ...)
}

func agentKey(id string) []byte      { return cat(prefixAgent, []byte(id)) }
func tokenKey(id string) []byte      { return cat(prefixToken, []byte(id)) }
func adminTokenKey(id string) []byte { return cat(prefixAdminToken, []byte(id)) }
func nodeKey(id string) []byte       { return cat(prefixNode, []byte(id)) }

// seqSuffix reads the u64BE seq that ends an index key.
func seqSuffix(k []byte) uint64 {
	if len(k) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(k)-8:])
}

func decodeU64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("counter value has %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// getU64 reads a u64BE value; 0 if the key is absent.
func getU64(txn *badger.Txn, k []byte) (uint64, error) {
	it, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var v uint64
	err = it.Value(func(b []byte) error {
		var err error
		v, err = decodeU64(b)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", k, err)
	}
	return v, nil
}

// getValue copies a value; ok is false if the key is absent.
func getValue(txn *badger.Txn, k []byte) (v []byte, ok bool, err error) {
	it, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err = it.ValueCopy(nil)
	return v, err == nil, err
}

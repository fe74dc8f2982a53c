package ledger

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Routing documents (destinations, routes, policies) are stored as opaque canonical
// content: the control plane's API validates them (controlplane/routing) before it
// proposes, so the handlers only check what keeps the key space sound.
//
//	doc/  u16BE(len) kind name                  -> DocumentRecord, the current version
//	                                               (a tombstone after a delete)
//	doch/ u16BE(len) kind u16BE(len) name u64BE(version) -> DocumentRecord, every version
//	m/docrev                                    -> u64BE documents revision
var (
	prefixDoc        = []byte("doc/")
	prefixDocHistory = []byte("doch/")
	keyDocRevision   = []byte("m/docrev")
)

// Limits of one document command, so that it always fits the apply budget.
const (
	// MaxDocumentBytes is the largest content of one document.
	MaxDocumentBytes = 1 << 20
	// MaxDocumentsBytes is the largest total content of one PutDocuments.
	MaxDocumentsBytes = 4 << 20
	// MaxDocumentsPerCommand is the most documents one command may carry.
	MaxDocumentsPerCommand = 1000
	maxDocKind             = 64
	maxDocName             = 255
)

func docKindPrefix(kind string) []byte {
	b := append([]byte(nil), prefixDoc...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(kind)))
	return append(b, kind...)
}

func docKey(kind, name string) []byte { return append(docKindPrefix(kind), name...) }

func docHistoryPrefix(kind, name string) []byte {
	b := append([]byte(nil), prefixDocHistory...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(kind)))
	b = append(b, kind...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	return append(b, name...)
}

func docHistoryKey(kind, name string, version uint64) []byte {
	return cat(docHistoryPrefix(kind, name), u64(version))
}

func checkDocRef(kind, name string) error {
	if kind == "" || len(kind) > maxDocKind {
		return fmt.Errorf("%w: document kind must be 1 to %d bytes", ErrInvalidCommand, maxDocKind)
	}
	if name == "" || len(name) > maxDocName {
		return fmt.Errorf("%w: document name must be 1 to %d bytes", ErrInvalidCommand, maxDocName)
	}
	return nil
}

// applyPutDocuments writes a new version of every document whose content differs from
// its current version, all in this entry's transaction. A refusal (bad kind or name,
// too large, a document twice) writes nothing and is reported in the result's Error.
func applyPutDocuments(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.PutDocuments
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	refuse := func(err error) (any, error) {
		return &storev1.PutDocumentsResult{Error: err.Error()}, nil
	}
	if n := len(p.GetDocuments()); n == 0 || n > MaxDocumentsPerCommand {
		return refuse(fmt.Errorf("%w: %d documents, want 1 to %d", ErrInvalidCommand, n, MaxDocumentsPerCommand))
	}
	total := 0
	seen := map[string]bool{}
	for _, d := range p.GetDocuments() {
		if err := checkDocRef(d.GetKind(), d.GetName()); err != nil {
			return refuse(err)
		}
		if len(d.GetContent()) == 0 || len(d.GetContent()) > MaxDocumentBytes {
			return refuse(fmt.Errorf("%w: %s %s: content must be 1 to %d bytes", ErrInvalidCommand, d.GetKind(), d.GetName(), MaxDocumentBytes))
		}
		ref := string(docKey(d.GetKind(), d.GetName()))
		if seen[ref] {
			return refuse(fmt.Errorf("%w: %s %s appears twice", ErrInvalidCommand, d.GetKind(), d.GetName()))
		}
		seen[ref] = true
		total += len(d.GetContent())
	}
	if total > MaxDocumentsBytes {
		return refuse(fmt.Errorf("%w: %d bytes of documents, more than %d", ErrInvalidCommand, total, MaxDocumentsBytes))
	}
	res := &storev1.PutDocumentsResult{}
	var writes []*storev1.DocumentRecord
	for _, d := range p.GetDocuments() {
		cur, ok, err := tx.getDocument(d.GetKind(), d.GetName())
		if err != nil {
			return nil, err
		}
		r := &storev1.DocumentResult{Kind: d.GetKind(), Name: d.GetName()}
		if ok && !cur.GetDeleted() {
			r.PreviousVersion = cur.GetVersion()
		}
		if ok && !cur.GetDeleted() && bytes.Equal(cur.GetContent(), d.GetContent()) {
			r.Version, r.Unchanged = cur.GetVersion(), true
		} else {
			r.Version = cur.GetVersion() + 1 // cur is empty when !ok
			writes = append(writes, &storev1.DocumentRecord{
				Kind: d.GetKind(), Name: d.GetName(), Version: r.Version, Content: d.GetContent(),
				Actor: p.GetActor(), Comment: p.GetComment(),
			})
		}
		res.Results = append(res.Results, r)
	}
	return res, tx.writeDocuments(writes, total)
}

// applyDeleteDocuments writes a tombstone version for every named document that exists;
// absent or already deleted documents are reported unchanged.
func applyDeleteDocuments(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.DeleteDocuments
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	if n := len(p.GetDocuments()); n == 0 || n > MaxDocumentsPerCommand {
		return &storev1.PutDocumentsResult{Error: fmt.Sprintf("%v: %d documents, want 1 to %d", ErrInvalidCommand, n, MaxDocumentsPerCommand)}, nil
	}
	for _, d := range p.GetDocuments() {
		if err := checkDocRef(d.GetKind(), d.GetName()); err != nil {
			return &storev1.PutDocumentsResult{Error: err.Error()}, nil
		}
	}
	res := &storev1.PutDocumentsResult{}
	var writes []*storev1.DocumentRecord
	seen := map[string]bool{}
	for _, d := range p.GetDocuments() {
		cur, ok, err := tx.getDocument(d.GetKind(), d.GetName())
		if err != nil {
			return nil, err
		}
		r := &storev1.DocumentResult{Kind: d.GetKind(), Name: d.GetName(), Version: cur.GetVersion(), Unchanged: true}
		ref := string(docKey(d.GetKind(), d.GetName()))
		if ok && !cur.GetDeleted() && !seen[ref] {
			seen[ref] = true
			r.PreviousVersion, r.Version, r.Unchanged = cur.GetVersion(), cur.GetVersion()+1, false
			writes = append(writes, &storev1.DocumentRecord{
				Kind: d.GetKind(), Name: d.GetName(), Version: r.Version, Deleted: true,
				Actor: p.GetActor(), Comment: p.GetComment(),
			})
		}
		res.Results = append(res.Results, r)
	}
	return res, tx.writeDocuments(writes, 0)
}

// writeDocuments stores new versions (history and current) under a new documents
// revision. Nothing is written when recs is empty.
func (tx *applyTxn) writeDocuments(recs []*storev1.DocumentRecord, size int) error {
	if len(recs) == 0 {
		return nil
	}
	if !tx.fits(2*len(recs)+1, 2*size+len(recs)*1024) {
		// Impossible within MaxDocumentsBytes and MaxDocumentsPerCommand.
		return fmt.Errorf("ledger: documents exceed the apply budget")
	}
	rev, err := getU64(tx.txn.Txn, keyDocRevision)
	if err != nil {
		return fmt.Errorf("ledger: read documents revision: %w", err)
	}
	rev++
	at := tx.appendedAt.UnixNano()
	for _, r := range recs {
		r.Revision, r.AppliedAtUnixNano = rev, at
		if err := tx.setProto(docHistoryKey(r.GetKind(), r.GetName(), r.GetVersion()), r); err != nil {
			return err
		}
		if err := tx.setProto(docKey(r.GetKind(), r.GetName()), r); err != nil {
			return err
		}
	}
	if err := tx.set(keyDocRevision, u64(rev)); err != nil {
		return err
	}
	tx.newEvents = true // wake Changed waiters: the delivery engine rebuilds its routing table
	return nil
}

func (tx *applyTxn) getDocument(kind, name string) (*storev1.DocumentRecord, bool, error) {
	rec := &storev1.DocumentRecord{}
	ok, err := tx.getProto(docKey(kind, name), rec)
	return rec, ok, err
}

// DocumentsRevision counts the document commands that changed something. It moves on
// every put, delete or rollback that writes a version, and Changed fires after it, so a
// reader rebuilds its routing table when the revision differs from the one it built.
func (l *Ledger) DocumentsRevision() (uint64, error) {
	var rev uint64
	err := l.view(func(txn *badger.Txn) error {
		var err error
		rev, err = getU64(txn, keyDocRevision)
		return err
	})
	return rev, err
}

// Documents returns the current version of every live document of kind ("Route", ...),
// sorted by name.
func (l *Ledger) Documents(kind string) ([]*storev1.DocumentRecord, error) {
	var out []*storev1.DocumentRecord
	err := l.scanDocuments(docKindPrefix(kind), func(rec *storev1.DocumentRecord) {
		if !rec.GetDeleted() {
			out = append(out, rec)
		}
	})
	return out, err
}

// Document returns the current version of a live document.
func (l *Ledger) Document(kind, name string) (*storev1.DocumentRecord, bool, error) {
	rec := &storev1.DocumentRecord{}
	ok, err := l.getProto(docKey(kind, name), rec)
	if !ok || rec.GetDeleted() {
		return nil, false, err
	}
	return rec, true, nil
}

// DocumentVersion returns one version of a document (possibly a tombstone).
func (l *Ledger) DocumentVersion(kind, name string, version uint64) (*storev1.DocumentRecord, bool, error) {
	rec := &storev1.DocumentRecord{}
	ok, err := l.getProto(docHistoryKey(kind, name, version), rec)
	if !ok {
		return nil, false, err
	}
	return rec, true, nil
}

// History returns every version of a document, oldest first; empty if it never existed.
func (l *Ledger) History(kind, name string) ([]*storev1.DocumentRecord, error) {
	var out []*storev1.DocumentRecord
	err := l.scanDocuments(docHistoryPrefix(kind, name), func(rec *storev1.DocumentRecord) {
		if rec.GetKind() == kind && rec.GetName() == name {
			out = append(out, rec)
		}
	})
	return out, err
}

func (l *Ledger) scanDocuments(prefix []byte, fn func(*storev1.DocumentRecord)) error {
	return l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			rec := &storev1.DocumentRecord{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, rec) }); err != nil {
				return fmt.Errorf("ledger: decode document %q: %w", it.Item().Key(), err)
			}
			fn(rec)
		}
		return nil
	})
}

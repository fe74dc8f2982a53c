package ledger

import (
	"strings"
	"testing"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func putDocs(t *testing.T, lg *raftLog, l *Ledger, docs ...*storev1.DocumentContent) *storev1.PutDocumentsResult {
	t.Helper()
	res, ok := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_DOCUMENT, &storev1.PutDocuments{Documents: docs, Actor: "adm1", Comment: "apply"})).(*storev1.PutDocumentsResult)
	if !ok {
		t.Fatal("PUT_DOCUMENT result is not a *PutDocumentsResult")
	}
	return res
}

func doc(kind, name, content string) *storev1.DocumentContent {
	return &storev1.DocumentContent{Kind: kind, Name: name, Content: []byte(content)}
}

func revision(t *testing.T, l *Ledger) uint64 {
	t.Helper()
	r, err := l.DocumentsRevision()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDocumentsVersionsAndHistory(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}

	ch := l.Changed()
	res := putDocs(t, lg, l, doc("Route", "r1", "v1"), doc("Destination", "d1", "d"))
	if res.GetError() != "" || len(res.GetResults()) != 2 {
		t.Fatalf("put = %v", res)
	}
	if r := res.GetResults()[0]; r.GetVersion() != 1 || r.GetUnchanged() || r.GetPreviousVersion() != 0 {
		t.Errorf("first put of r1 = %v, want version 1, created", r)
	}
	select {
	case <-ch:
	default:
		t.Error("a document change did not signal Changed")
	}
	if got := revision(t, l); got != 1 {
		t.Errorf("revision after one put = %d, want 1", got)
	}

	// Same content: unchanged, no version, no revision.
	res = putDocs(t, lg, l, doc("Route", "r1", "v1"))
	if r := res.GetResults()[0]; !r.GetUnchanged() || r.GetVersion() != 1 {
		t.Errorf("identical put = %v, want unchanged at version 1", r)
	}
	if got := revision(t, l); got != 1 {
		t.Errorf("revision after an unchanged put = %d, want 1", got)
	}

	res = putDocs(t, lg, l, doc("Route", "r1", "v2"))
	if r := res.GetResults()[0]; r.GetUnchanged() || r.GetVersion() != 2 || r.GetPreviousVersion() != 1 {
		t.Errorf("changed put = %v, want version 2 after 1", r)
	}
	cur, ok, err := l.Document("Route", "r1")
	if err != nil || !ok || string(cur.GetContent()) != "v2" || cur.GetVersion() != 2 || cur.GetActor() != "adm1" {
		t.Fatalf("Document = %v, %v, %v", cur, ok, err)
	}
	if cur.GetAppliedAtUnixNano() != at(3).UnixNano() || cur.GetRevision() != 2 {
		t.Errorf("applied_at %d revision %d, want the entry's append time %d and revision 2", cur.GetAppliedAtUnixNano(), cur.GetRevision(), at(3).UnixNano())
	}

	// Delete writes a tombstone; the document disappears from listings but keeps its
	// history, and a later put continues the version numbers.
	del, ok := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_DELETE_DOCUMENT, &storev1.DeleteDocuments{
		Documents: []*storev1.DocumentRef{{Kind: "Route", Name: "r1"}, {Kind: "Route", Name: "nope"}},
	})).(*storev1.PutDocumentsResult)
	if !ok || del.GetResults()[0].GetVersion() != 3 || del.GetResults()[0].GetUnchanged() || !del.GetResults()[1].GetUnchanged() {
		t.Fatalf("delete = %v", del)
	}
	if _, ok, _ := l.Document("Route", "r1"); ok {
		t.Error("deleted document still returned by Document")
	}
	routes, err := l.Documents("Route")
	if err != nil || len(routes) != 0 {
		t.Errorf("Documents(Route) after delete = %v, %v", routes, err)
	}
	res = putDocs(t, lg, l, doc("Route", "r1", "v1"))
	if r := res.GetResults()[0]; r.GetVersion() != 4 || r.GetPreviousVersion() != 0 {
		t.Errorf("put after delete = %v, want version 4, created", r)
	}
	hist, err := l.History("Route", "r1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hist {
		s := string(h.GetContent())
		if h.GetDeleted() {
			s = "deleted"
		}
		got = append(got, s)
	}
	if strings.Join(got, ",") != "v1,v2,deleted,v1" {
		t.Errorf("history = %v", got)
	}
	if v, ok, _ := l.DocumentVersion("Route", "r1", 2); !ok || string(v.GetContent()) != "v2" {
		t.Errorf("DocumentVersion 2 = %v, %v", v, ok)
	}
	dests, _ := l.Documents("Destination")
	if len(dests) != 1 || dests[0].GetName() != "d1" {
		t.Errorf("Documents(Destination) = %v", dests)
	}

	// New keys travel in snapshots and the Hash.
	cp := testSnapshotRestore(t, l)
	if h, _ := cp.History("Route", "r1"); len(h) != 4 {
		t.Errorf("restored history has %d versions, want 4", len(h))
	}
	if revision(t, cp) != revision(t, l) {
		t.Error("restored documents revision differs")
	}
}

func TestDocumentsRefusals(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	for name, docs := range map[string][]*storev1.DocumentContent{
		"none":       nil,
		"empty kind": {doc("", "x", "c")},
		"empty name": {doc("Route", "", "c")},
		"long name":  {doc("Route", strings.Repeat("n", 300), "c")},
		"no content": {doc("Route", "x", "")},
		"too big":    {doc("Route", "x", strings.Repeat("c", MaxDocumentBytes+1))},
		"twice":      {doc("Route", "x", "a"), doc("Route", "x", "b")},
	} {
		res := putDocs(t, lg, l, docs...)
		if !strings.Contains(res.GetError(), ErrInvalidCommand.Error()) {
			t.Errorf("%s: result error %q, want a refusal", name, res.GetError())
		}
		if _, ok, err := l.Document("Route", "x"); ok || err != nil {
			t.Errorf("%s: refused put stored a document (%v)", name, err)
		}
		if revision(t, l) != 0 {
			t.Errorf("%s: a refused put moved the revision", name)
		}
	}
	// Names that share a prefix do not see each other's history.
	putDocs(t, lg, l, doc("Route", "a", "1"), doc("Route", "ab", "2"))
	if h, _ := l.History("Route", "a"); len(h) != 1 || string(h[0].GetContent()) != "1" {
		t.Errorf("History(a) = %v", h)
	}
	// Kinds are separate name spaces.
	putDocs(t, lg, l, doc("Destination", "a", "3"))
	if d, _ := l.Documents("Route"); len(d) != 2 {
		t.Errorf("Documents(Route) = %d documents, want 2", len(d))
	}
}

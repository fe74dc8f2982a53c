package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/pki"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func putCA(t *testing.T, s *Store, certPEM, clusterID string) {
	t.Helper()
	if _, err := s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_PUT_CA, &storev1.PutCA{CertPem: certPEM, KeyPem: "k", ClusterId: clusterID}); err != nil {
		t.Fatal(err)
	}
}

func backupOf(t *testing.T, s *Store) *os.File {
	t.Helper()
	snap, err := s.Ledger().OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	f, err := os.Create(filepath.Join(t.TempDir(), "backup.snap"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := snap.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRestoreBackupClusterID: a backup without a cluster id (no CA) is refused by a
// cluster that has one unless forced; a backup whose CA record was written by a build
// before cluster ids carries the id derived from its CA, so it matches its cluster.
func TestRestoreBackupClusterID(t *testing.T) {
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	id := ledger.ClusterIDOf(string(ca.CertPEM()))
	if len(id) != len("cl_")+16 {
		t.Fatalf("cluster id %q", id)
	}
	live := mustOpen(t, testConfig(t, t.TempDir()))
	defer live.Close()
	putCA(t, live, string(ca.CertPEM()), id)
	ingest(t, live, batch("a1", 1, 10))

	noCA := mustOpen(t, testConfig(t, t.TempDir()))
	defer noCA.Close()
	ingest(t, noCA, batch("b1", 1, 3))
	f := backupOf(t, noCA)
	info, err := ledger.InspectSnapshot(f)
	if err != nil || info.ClusterID != "" {
		t.Fatalf("inspect a backup without CA: %+v %v", info, err)
	}
	f.Seek(0, 0)
	var mismatch *ClusterMismatchError
	if _, err := live.RestoreBackup(f, RestoreOptions{}); !errors.As(err, &mismatch) || mismatch.Live != id || mismatch.Backup != "" || !errors.Is(err, ErrClusterMismatch) {
		t.Fatalf("restore of a backup without cluster id: %v", err)
	}
	if live.Ledger().LastSeq() != 10 {
		t.Fatalf("a refused restore changed the ledger: last seq %d", live.Ledger().LastSeq())
	}

	old := mustOpen(t, testConfig(t, t.TempDir()))
	defer old.Close()
	putCA(t, old, string(ca.CertPEM()), "") // as stored by a build before cluster ids
	ingest(t, old, batch("c1", 1, 5))
	if got, ok, err := old.Ledger().ClusterID(); err != nil || !ok || got != id {
		t.Fatalf("cluster id of a CA record without one: %q %v %v, want %q derived from the CA", got, ok, err, id)
	}
	if _, err := live.RestoreBackup(backupOf(t, old), RestoreOptions{}); err != nil {
		t.Fatalf("restore of a backup of the same CA taken before cluster ids: %v", err)
	}
	if live.Ledger().LastSeq() != 5 {
		t.Fatalf("after restore last seq %d, want 5", live.Ledger().LastSeq())
	}

	f.Seek(0, 0)
	if _, err := live.RestoreBackup(f, RestoreOptions{Force: true}); err != nil {
		t.Fatalf("forced restore of a backup without cluster id: %v", err)
	}
	if _, ok, _ := live.Ledger().ClusterID(); ok || live.Ledger().LastSeq() != 3 {
		t.Fatalf("after a forced restore: cluster id present %v, last seq %d", ok, live.Ledger().LastSeq())
	}
}

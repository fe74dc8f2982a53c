package ledger

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// ClusterIDPrefix starts every cluster id.
const ClusterIDPrefix = "cl_"

// ClusterIDOf is the cluster id of the cluster whose CA certificate is certPEM: "cl_"
// and the first 16 hex digits of the SHA-256 of the CA's public key (the hash the CA
// pin is made of). A cluster's CA key is random and made once at bootstrap, so two
// clusters never share an id, while a node given the old cluster's pki/ (the rescue
// procedure in docs/operations.md) keeps it. It is "" when certPEM is not a
// certificate.
func ClusterIDOf(certPEM string) string {
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return ClusterIDPrefix + hex.EncodeToString(sum[:8])
}

// clusterIDOfCA is the id a stored CA record names: its cluster_id, or, for a record
// written by a build before cluster ids, the id derived from its certificate.
func clusterIDOfCA(ca *storev1.PutCA) string {
	if id := ca.GetClusterId(); id != "" {
		return id
	}
	return ClusterIDOf(ca.GetCertPem())
}

// ClusterID is the id of the cluster this ledger belongs to; ok is false before the
// cluster CA is stored (a node that has not bootstrapped or caught up yet).
func (l *Ledger) ClusterID() (id string, ok bool, err error) {
	var ca storev1.PutCA
	ok, err = l.getProto(keyCA, &ca)
	if !ok || err != nil {
		return "", false, err
	}
	return clusterIDOfCA(&ca), true, nil
}

// SnapshotInfo describes a verified snapshot stream.
type SnapshotInfo struct {
	// Index is the raft index the snapshot reflects.
	Index uint64
	// ClusterID is the id of the cluster the snapshot was taken from; "" when the
	// snapshot holds no cluster CA (taken before the cluster was bootstrapped).
	ClusterID string
}

// InspectSnapshot verifies a whole snapshot stream like VerifySnapshot and returns
// what it describes.
func InspectSnapshot(r io.Reader) (SnapshotInfo, error) {
	idx, ca, err := readSnapshotCA(r, nil)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return snapshotInfo(idx, ca), nil
}

// snapshotInfo describes a verified stream from what readSnapshotCA returned.
func snapshotInfo(index uint64, ca *storev1.PutCA) SnapshotInfo {
	info := SnapshotInfo{Index: index}
	if ca != nil {
		info.ClusterID = clusterIDOfCA(ca)
	}
	return info
}

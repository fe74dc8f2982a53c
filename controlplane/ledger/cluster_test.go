package ledger

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func testCertPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestClusterID: the stored id wins; a record without one (an earlier build) gets the
// id derived from its CA; a snapshot carries the id; no CA, no id.
func TestClusterID(t *testing.T) {
	cert := testCertPEM(t)
	derived := ClusterIDOf(cert)
	if !strings.HasPrefix(derived, "cl_") || len(derived) != 19 || ClusterIDOf(cert) != derived || ClusterIDOf(testCertPEM(t)) == derived {
		t.Fatalf("ClusterIDOf = %q: want cl_ + 16 hex, stable, different for another CA", derived)
	}
	if ClusterIDOf("not a certificate") != "" {
		t.Fatal("an id for a non-certificate")
	}
	for _, tc := range []struct{ stored, want string }{{"", derived}, {"cl_00000000000000aa", "cl_00000000000000aa"}} {
		l := newLedger(t, false)
		lg := raftLog{t: t}
		if _, ok, err := l.ClusterID(); ok || err != nil {
			t.Fatalf("cluster id before the CA: %v %v", ok, err)
		}
		info, err := InspectSnapshot(bytes.NewReader(snapshotBytes(t, l)))
		if err != nil || info.ClusterID != "" {
			t.Fatalf("snapshot without CA: %+v %v", info, err)
		}
		lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_CA, &storev1.PutCA{CertPem: cert, KeyPem: "k", ClusterId: tc.stored}))
		if got, ok, err := l.ClusterID(); got != tc.want || !ok || err != nil {
			t.Fatalf("stored %q: cluster id %q %v %v, want %q", tc.stored, got, ok, err, tc.want)
		}
		info, err = InspectSnapshot(bytes.NewReader(snapshotBytes(t, l)))
		if err != nil || info.ClusterID != tc.want || info.Index != l.AppliedIndex() {
			t.Fatalf("stored %q: snapshot info %+v %v, want id %q at %d", tc.stored, info, err, tc.want, l.AppliedIndex())
		}
	}
}

package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/pki"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// fleetClient is a FleetService client with the bootstrap admin token, or with token
// instead when given ("-" for none).
func fleetClient(t *testing.T, srv *controlplanetest.Server, token string) adminv1connect.FleetServiceClient {
	t.Helper()
	c, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	switch token {
	case "":
	case "-":
		c.Token = ""
	default:
		c.Token = token
	}
	hc, addr, closeFn, err := c.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	return adminv1connect.NewFleetServiceClient(hc, addr)
}

func pushRelease(ctx context.Context, c adminv1connect.FleetServiceClient, version string, data []byte) (*adminv1.PushReleaseResponse, error) {
	stream := c.PushRelease(ctx)
	head := &adminv1.PushReleaseRequest{Version: version, Os: runtime.GOOS, Arch: runtime.GOARCH, Size: int64(len(data))}
	for i := 0; i == 0 || i < len(data); i += 64 << 10 {
		m := &adminv1.PushReleaseRequest{Data: data[i:min(i+64<<10, len(data))]}
		if i == 0 {
			head.Data, m = m.Data, head
		}
		if err := stream.Send(m); err != nil {
			break
		}
	}
	res, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// TestReleaseRefusals: pushing needs an admin token (none, or a viewer's, is refused
// before the body is read) and stays under the node's size limit; downloading needs
// the certificate of an enrolled agent that is not revoked.
func TestReleaseRefusals(t *testing.T) {
	srv := controlplanetest.TestServer(t, func(c *controlplane.Config) { c.MaxReleaseBytes = 1 << 20 })
	ctx := context.Background()
	admin := fleetClient(t, srv, "")
	access := func() adminv1connect.AccessServiceClient {
		c, err := cliconfig.Load(srv.AdminConfigPath())
		if err != nil {
			t.Fatal(err)
		}
		hc, addr, closeFn, err := c.HTTPClient()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(closeFn)
		return adminv1connect.NewAccessServiceClient(hc, addr)
	}()
	viewer, err := access.CreateCredential(ctx, connect.NewRequest(&adminv1.CreateCredentialRequest{Name: "vera", Role: "viewer"}))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("crossdock"), 1000)
	for _, tc := range []struct {
		name   string
		client adminv1connect.FleetServiceClient
		data   []byte
		code   connect.Code
	}{
		{"no token", fleetClient(t, srv, "-"), data, connect.CodeUnauthenticated},
		{"viewer", fleetClient(t, srv, viewer.Msg.GetToken()), data, connect.CodePermissionDenied},
		{"over the size limit", admin, make([]byte, 1<<20+1), connect.CodeResourceExhausted},
	} {
		if _, err := pushRelease(ctx, tc.client, "v1", tc.data); connect.CodeOf(err) != tc.code {
			t.Errorf("push, %s: %v; want %v", tc.name, err, tc.code)
		}
	}
	if rs, err := admin.ListReleases(ctx, connect.NewRequest(&adminv1.ListReleasesRequest{})); err != nil || len(rs.Msg.GetReleases()) != 0 {
		t.Fatalf("releases after refused pushes: %v %v", rs, err)
	}
	res, err := pushRelease(ctx, admin, "v1", data)
	if err != nil {
		t.Fatal(err)
	}
	sum := res.GetRelease().GetSha256()
	if want := sha256.Sum256(data); sum != hex.EncodeToString(want[:]) {
		t.Fatalf("release sha256 %s", sum)
	}
	if _, err := pushRelease(ctx, admin, "v1", append(data, '!')); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("another binary as v1: %v; want already_exists", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(srv.CA().Cert())
	download := func(certs []tls.Certificate, sum string) ([]byte, error) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}, ForceAttemptHTTP2: true}}
		stream, err := uplinkv1connect.NewUplinkServiceClient(hc, "https://"+srv.Addr()).DownloadRelease(ctx, connect.NewRequest(&uplinkv1.DownloadReleaseRequest{Sha256: sum}))
		if err != nil {
			return nil, err
		}
		defer stream.Close()
		var b []byte
		for stream.Receive() {
			b = append(b, stream.Msg().GetData()...)
		}
		return b, stream.Err()
	}
	if _, err := download(nil, sum); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("download without a client certificate: %v; want unauthenticated", err)
	}
	_, dir := enrolled(t, srv, "downloader")
	certPEM, keyPEM, err := pki.LoadKeyPair(filepath.Join(dir, "identity"), "agent")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := download([]tls.Certificate{cert}, sum); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("download by an enrolled agent: %d bytes, %v", len(b), err)
	}
	if _, err := download([]tls.Certificate{cert}, strings.Repeat("0", 64)); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("download of an unknown release: %v; want not_found", err)
	}
	if _, err := srv.Admin.RevokeAgent(ctx, connect.NewRequest(&adminv1.RevokeAgentRequest{Id: "downloader", Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	if _, err := download([]tls.Certificate{cert}, sum); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("download by a revoked agent: %v; want permission_denied, revoked", err)
	}
}

// TestUpgradeCommand: an agent run in-process (no supervisor) refuses an upgrade and the
// rollout fails with its reason; an agent with an Upgrade hook gets the release
// downloaded over its link and checked, at the path it is handed.
func TestUpgradeCommand(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	ctx := context.Background()
	admin := fleetClient(t, srv, "")
	data := bytes.Repeat([]byte("build B "), 50000)
	if _, err := pushRelease(ctx, admin, "v2", data); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		handed []byte
	)
	plain, _ := enrolled(t, srv, "plain", func(c *agent.Config) { c.Labels = map[string]string{"kind": "plain"} })
	hooked, _ := enrolled(t, srv, "hooked", func(c *agent.Config) {
		c.Labels = map[string]string{"kind": "hooked"}
		c.UpgradeDir = t.TempDir()
		c.Upgrade = func(_ context.Context, cmd *uplinkv1.UpgradeCommand, path string) error {
			b, err := os.ReadFile(path)
			mu.Lock()
			handed = b
			mu.Unlock()
			return errors.Join(err, errors.New("test: swap refused"))
		}
	})
	run(t, plain)
	run(t, hooked)
	for _, tc := range []struct{ selector, reason string }{
		{"kind=plain", "not upgradable: not run by crossdock agent"},
		{"kind=hooked", "test: swap refused"},
	} {
		controlplanetest.WaitFor(t, 20*time.Second, "agents connected", func() bool {
			return plain.Status().GetUplinkState() == "connected" && hooked.Status().GetUplinkState() == "connected"
		})
		res, err := admin.StartUpgrade(ctx, connect.NewRequest(&adminv1.StartUpgradeRequest{Version: "v2", Os: runtime.GOOS, Arch: runtime.GOARCH, Selector: tc.selector}))
		if err != nil {
			t.Fatal(err)
		}
		id := res.Msg.GetRollout().GetId()
		controlplanetest.WaitFor(t, 30*time.Second, "rollout "+tc.selector+" failed", func() bool {
			r, err := admin.GetUpgrade(ctx, connect.NewRequest(&adminv1.GetUpgradeRequest{Id: id}))
			return err == nil && r.Msg.GetRollout().GetState() == "failed"
		})
		r, _ := admin.GetUpgrade(ctx, connect.NewRequest(&adminv1.GetUpgradeRequest{Id: id}))
		if !strings.Contains(r.Msg.GetRollout().GetReason(), tc.reason) {
			t.Errorf("rollout %s: reason %q; want %q", tc.selector, r.Msg.GetRollout().GetReason(), tc.reason)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(handed, data) {
		t.Errorf("the upgrade hook was handed %d bytes, want the %d pushed", len(handed), len(data))
	}
}

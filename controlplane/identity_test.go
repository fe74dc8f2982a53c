package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// saveBackup takes a backup through the admin API, as `crossdock snapshot save` does.
func saveBackup(t *testing.T, admin adminv1connect.AdminServiceClient) []byte {
	t.Helper()
	stream, err := admin.SaveSnapshot(context.Background(), connect.NewRequest(&adminv1.SaveSnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for stream.Receive() {
		b.Write(stream.Msg().GetChunk())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("save backup: %v", err)
	}
	return b.Bytes()
}

// restoreBackup uploads a backup as `crossdock snapshot restore [--force]` does.
func restoreBackup(admin adminv1connect.AdminServiceClient, backup []byte, force bool) (*adminv1.RestoreSnapshotResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream := admin.RestoreSnapshot(ctx)
	for off := 0; off < len(backup); off += 64 << 10 {
		end := min(off+64<<10, len(backup))
		if err := stream.Send(&adminv1.RestoreSnapshotRequest{Chunk: backup[off:end], Force: force}); err != nil {
			_, cerr := stream.CloseAndReceive()
			return nil, errors.Join(err, cerr)
		}
	}
	res, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func clusterID(t *testing.T, admin adminv1connect.AdminServiceClient) string {
	t.Helper()
	res, err := admin.GetClusterStatus(context.Background(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetClusterId()
	if !strings.HasPrefix(id, ledger.ClusterIDPrefix) || len(id) != len(ledger.ClusterIDPrefix)+16 {
		t.Fatalf("cluster id %q, want cl_ and 16 hex digits", id)
	}
	return id
}

// adminAt is an admin client with the config at path, dialing addr.
func adminAt(t *testing.T, path, addr string) adminv1connect.AdminServiceClient {
	t.Helper()
	cc, err := cliconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cc.Addr = addr
	cl, closeFn, err := cc.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	return cl
}

// TestRestoreAnotherClustersBackup restores a backup of a one-node cluster into a live
// three-node cluster: refused, naming both cluster ids, with the live cluster untouched;
// with force it is installed, and the backup's admin token replaces the live one.
func TestRestoreAnotherClustersBackup(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	other := controlplanetest.TestServer(t, func(cfg *controlplane.Config) { cfg.NodeID = "other-1" })
	if err := ingest(context.Background(), other, "other-agent", 1, 50); err != nil {
		t.Fatal(err)
	}
	liveCfgPath := c.Nodes[0].AdminConfigPath()
	admins := map[*controlplanetest.Server]adminv1connect.AdminServiceClient{}
	for _, n := range c.Nodes {
		admins[n] = adminAt(t, liveCfgPath, n.Addr())
	}
	liveID, otherID := clusterID(t, c.Nodes[0].Admin), clusterID(t, other.Admin)
	if liveID == otherID {
		t.Fatalf("two clusters share the id %s", liveID)
	}
	backup := saveBackup(t, other.Admin)

	// onLeader restores through the current leader, again if leadership moved while
	// it was installing (two cores shared by several raft nodes: elections happen).
	onLeader := func(backup []byte, force bool) (*adminv1.RestoreSnapshotResponse, error) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			res, err := restoreBackup(admins[c.WaitLeader(nil)], backup, force)
			if connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(deadline) {
				return res, err
			}
			t.Logf("restore: %v; again on the new leader", err)
		}
	}
	// The cluster's own backup is restored without --force.
	if _, err := onLeader(saveBackup(t, c.Nodes[0].Admin), false); err != nil {
		t.Fatalf("restoring the cluster's own backup: %v", err)
	}

	_, err := onLeader(backup, false)
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), liveID) ||
		!strings.Contains(err.Error(), otherID) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore of another cluster's backup: %v; want failed_precondition naming %s, %s and --force", err, liveID, otherID)
	}
	// Nothing changed: the live admin token works, on every node, and the id is the same.
	for _, n := range c.Nodes {
		if got := clusterID(t, admins[n]); got != liveID {
			t.Fatalf("node %s: cluster id %s after a refused restore, want %s", n.Config.NodeID, got, liveID)
		}
	}

	// One follower is down while the backup is installed: it gets the restored state
	// only after the migration's restart, and node.json must follow it then.
	behind := 1
	if c.Nodes[1].Store().IsLeader() {
		behind = 2
	}
	c.Nodes[behind].Stop()
	res, err := onLeader(backup, true)
	if err != nil {
		t.Fatalf("forced restore: %v", err)
	}
	if res.GetClusterId() != otherID || res.GetEvents() != 50 {
		t.Fatalf("forced restore installed cluster %s with %d events, want %s with 50", res.GetClusterId(), res.GetEvents(), otherID)
	}
	// What --force means: the backup's admin token now rules the live cluster, the
	// live one is refused.
	otherCfg, err := cliconfig.Load(other.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	liveCfg, err := cliconfig.Load(liveCfgPath)
	if err != nil {
		t.Fatal(err)
	}
	otherCfg.Addr, otherCfg.CAPEM = liveCfg.Addr, liveCfg.CAPEM // the nodes still serve with their own certificates
	oc, closeFn, err := otherCfg.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	controlplanetest.WaitFor(t, 10*time.Second, "the backup's admin token to work on the live cluster", func() bool {
		_, err := oc.ListAgents(context.Background(), connect.NewRequest(&adminv1.ListAgentsRequest{}))
		return err == nil
	})
	if _, err := c.Nodes[0].Admin.ListAgents(context.Background(), connect.NewRequest(&adminv1.ListAgentsRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("the live admin token after a forced restore: %v, want unauthenticated", err)
	}

	// Finishing the migration as docs/operations.md says: stop every node, put the
	// backup cluster's pki/ in each data dir, start them all. Then the backup cluster's
	// admin config works as it is (its CA too), with the address of one of these nodes.
	for _, n := range c.Nodes {
		n.Stop()
	}
	for _, n := range c.Nodes {
		pki := filepath.Join(n.Config.DataDir, "pki")
		if err := os.RemoveAll(pki); err != nil {
			t.Fatal(err)
		}
		copyDir(t, filepath.Join(other.Config.DataDir, "pki"), pki)
		copyKeyFile(t, other.Config.DataDir, n.Config.DataDir) // the backup's secrets are sealed under its key
	}
	// The joined nodes first: node-1 bootstrapped the cluster and waits for a leader
	// at start, which needs two voters.
	for _, i := range []int{1, 2, 0} {
		c.Restart(i)
	}
	c.WaitVoters(3)
	otherCfg, err = cliconfig.Load(other.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	otherCfg.Addr = c.Nodes[1].Addr()
	oc2, closeFn2, err := otherCfg.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn2()
	controlplanetest.WaitFor(t, 20*time.Second, "the backup cluster's own admin config to work on the migrated nodes", func() bool {
		_, err := oc2.ListAgents(context.Background(), connect.NewRequest(&adminv1.ListAgentsRequest{}))
		return err == nil
	})
	// A node records the cluster id in node.json at start, and again when a restored
	// snapshot reaches it later (the follower that was down).
	for _, n := range c.Nodes {
		controlplanetest.WaitFor(t, 20*time.Second, fmt.Sprintf("node %s's node.json to name cluster %s", n.Config.NodeID, otherID), func() bool {
			var ident controlplane.NodeIdentity
			b, err := os.ReadFile(filepath.Join(n.Config.DataDir, controlplane.NodeIdentityFile))
			if err == nil {
				err = json.Unmarshal(b, &ident)
			}
			return err == nil && ident.ClusterID == otherID
		})
	}
}

// copyDir copies a stopped node's data dir, as an operator copying it to another host.
// copyKeyFile copies the secrets key file beside data dir from to the place beside data
// dir to (controlplane.Config.SecretsKey's default), as docs/operations.md says to
// whenever pki/ moves.
func copyKeyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(from) + ".secrets.key")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Clean(to)+".secrets.key", b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copy data dir: %v", err)
	}
}

// startNode starts a node and returns how long New took; the caller stops it.
func startNode(t *testing.T, cfg controlplane.Config) (*controlplane.Server, time.Duration, error) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = controlplanetest.Logger(t)
	}
	cfg.TuneStore = controlplanetest.FastRaft
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	srv, err := controlplane.New(ctx, cfg)
	return srv, time.Since(start), err
}

func runNode(t *testing.T, srv *controlplane.Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestCopiedDataDirRefused copies a node's data dir and starts the copy at other
// addresses, as on another host: it must not become a second leader with the same CA
// and admin token. Without node.json (a data dir of an earlier build) the ledger's
// record of the node catches it too. --i-moved-this-node (Config.Moved) lets a node
// that really moved start, at its new addresses.
func TestCopiedDataDirRefused(t *testing.T) {
	orig := controlplanetest.TestServer(t, nil)
	origID := clusterID(t, orig.Admin)
	orig.Stop()
	var ident controlplane.NodeIdentity
	b, err := os.ReadFile(filepath.Join(orig.Config.DataDir, controlplane.NodeIdentityFile))
	if err != nil {
		t.Fatalf("node identity after the first start: %v", err)
	}
	if err := json.Unmarshal(b, &ident); err != nil {
		t.Fatal(err)
	}
	if ident.NodeID != orig.Config.NodeID || ident.ClusterID != origID || ident.APIAddr != orig.Addr() || ident.RaftAddr != orig.Config.RaftListen {
		t.Fatalf("node.json = %+v; want node %s of cluster %s at %s / raft %s", ident, orig.Config.NodeID, origID, orig.Addr(), orig.Config.RaftListen)
	}
	if st, err := os.Stat(filepath.Join(orig.Config.DataDir, controlplane.NodeIdentityFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("node.json mode: %v %v, want 0600", st.Mode(), err)
	}

	copied := t.TempDir()
	copyDir(t, orig.Config.DataDir, copied)
	copyKeyFile(t, orig.Config.DataDir, copied)
	cfg := controlplane.Config{NodeID: orig.Config.NodeID, DataDir: copied, Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0", Bootstrap: true}
	srv, took, err := startNode(t, cfg)
	if err == nil {
		runNode(t, srv)
		t.Fatalf("a copy of node %s's data dir started as a second node (leader: %v)", cfg.NodeID, srv.Store().IsLeader())
	}
	for _, want := range []string{"belongs to node", orig.Addr(), ident.RaftAddr, "--i-moved-this-node", "second node"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("copied data dir: %v; want it to say %q", err, want)
		}
	}
	if took > 5*time.Second {
		t.Fatalf("the refusal took %s", took)
	}

	// A data dir of a build before node.json: the replica's own node record.
	if err := os.Remove(filepath.Join(copied, controlplane.NodeIdentityFile)); err != nil {
		t.Fatal(err)
	}
	srv, _, err = startNode(t, cfg)
	if err == nil {
		runNode(t, srv)
		t.Fatal("a copied data dir without node.json started as a second node")
	}
	if !strings.Contains(err.Error(), "record in the data dir's ledger") || !strings.Contains(err.Error(), ident.RaftAddr) {
		t.Fatalf("copied data dir without node.json: %v", err)
	}

	// The original still starts at its own addresses.
	restarted, _, err := startNode(t, orig.Config)
	if err != nil {
		t.Fatalf("restart the original at its addresses: %v", err)
	}
	if err := restarted.Store().Close(); err != nil { // never served: close what New opened
		t.Fatal(err)
	}

	// A node that really moved (the original is gone): --i-moved-this-node.
	cfg.Moved = true
	srv, _, err = startNode(t, cfg)
	if err != nil {
		t.Fatalf("start a moved node: %v", err)
	}
	runNode(t, srv)
	var now controlplane.NodeIdentity
	b, err = os.ReadFile(filepath.Join(copied, controlplane.NodeIdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &now); err != nil {
		t.Fatal(err)
	}
	if now.APIAddr != srv.Addr() || now.RaftAddr != srv.Store().RaftAddr() || now.ClusterID != origID {
		t.Fatalf("node.json after the move = %+v; want the new addresses %s / %s", now, srv.Addr(), srv.Store().RaftAddr())
	}
	controlplanetest.WaitFor(t, 10*time.Second, "the moved node's new raft address in the raft configuration", func() bool {
		cf := srv.Store().Raft().GetConfiguration()
		if cf.Error() != nil {
			return false
		}
		s := cf.Configuration().Servers
		return len(s) == 1 && string(s[0].Address) == srv.Store().RaftAddr()
	})
	controlplanetest.WaitFor(t, 10*time.Second, "the moved node's record to carry its new API address", func() bool {
		n, ok, err := srv.Store().Ledger().Node(cfg.NodeID)
		return err == nil && ok && n.GetApiAddr() == srv.Addr()
	})
}

// TestDataDirOfAnotherNodeID starts a node's data dir with another --node-id: refused
// at once, naming both ids (it used to wait for a raft leader that never came).
func TestDataDirOfAnotherNodeID(t *testing.T) {
	orig := controlplanetest.TestServer(t, nil)
	orig.Stop()
	cfg := orig.Config
	cfg.NodeID = "someone-else"
	srv, took, err := startNode(t, cfg)
	if err == nil {
		runNode(t, srv)
		t.Fatalf("node %s's data dir started as node %s", orig.Config.NodeID, cfg.NodeID)
	}
	if !strings.Contains(err.Error(), `belongs to node "test-node-1"`) || !strings.Contains(err.Error(), `--node-id "someone-else"`) {
		t.Fatalf("data dir started with another node id: %v; want both ids named", err)
	}
	if took > 2*time.Second {
		t.Fatalf("the refusal took %s; want it at once", took)
	}
}

// TestCreateTokenKindRequired sends token kinds a JSON client can send: an unknown name
// ("root") decodes as unset and must be refused, not become an agent token.
func TestCreateTokenKindRequired(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := cc.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	post := func(body string) (int, string) {
		t.Helper()
		res, err := hc.Post(base+"/crossdock.admin.v1.AdminService/CreateToken", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for _, body := range []string{`{"kind":"root"}`, `{"kind":"TOKEN_KIND_ROOT"}`, `{}`, `{"kind":7}`} {
		code, msg := post(body)
		if code != http.StatusBadRequest || !strings.Contains(msg, "invalid_argument") ||
			!strings.Contains(msg, "TOKEN_KIND_AGENT") || !strings.Contains(msg, "TOKEN_KIND_SERVER") {
			t.Fatalf("CreateToken %s: %d %s; want 400 invalid_argument listing the kinds", body, code, msg)
		}
	}
	if code, msg := post(`{"kind":"TOKEN_KIND_AGENT"}`); code != http.StatusOK || !strings.Contains(msg, `"token"`) {
		t.Fatalf("CreateToken agent: %d %s", code, msg)
	}
	if _, err := srv.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind(99)})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("CreateToken kind 99: %v, want invalid_argument", err)
	}
}

// TestRebuildWithOldPKIRestoresWithoutForce follows docs/operations.md, "With no
// survivor: rebuild from a snapshot": a new first node given the old cluster's pki/ has
// the old cluster's id, so the old backup restores without --force.
func TestRebuildWithOldPKIRestoresWithoutForce(t *testing.T) {
	old := controlplanetest.TestServer(t, nil)
	if err := ingest(context.Background(), old, "a1", 1, 20); err != nil {
		t.Fatal(err)
	}
	oldID := clusterID(t, old.Admin)
	backup := saveBackup(t, old.Admin)
	old.Stop()

	dir := t.TempDir()
	copyDir(t, filepath.Join(old.Config.DataDir, "pki"), filepath.Join(dir, "pki"))
	copyKeyFile(t, old.Config.DataDir, dir)
	rebuilt := controlplanetest.TestServer(t, func(c *controlplane.Config) { c.DataDir = dir })
	if got := clusterID(t, rebuilt.Admin); got != oldID {
		t.Fatalf("a node bootstrapped with the old pki/ has cluster id %s, want %s", got, oldID)
	}
	res, err := restoreBackup(rebuilt.Admin, backup, false)
	if err != nil {
		t.Fatalf("restore of the old cluster's backup into the rebuilt node: %v", err)
	}
	if res.GetClusterId() != oldID || res.GetEvents() != 20 {
		t.Fatalf("restored cluster %s with %d events, want %s with 20", res.GetClusterId(), res.GetEvents(), oldID)
	}
}

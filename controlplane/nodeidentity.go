package controlplane

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/platform/fsutil"
)

// NodeIdentityFile is the file in a node's data dir that says which node of which
// cluster the data dir belongs to, and at which addresses that node runs. It is written
// at the first start that reaches the cluster and checked at every start after, so a
// data dir started with another --node-id, or copied and started elsewhere as a
// second node, is refused at once.
const NodeIdentityFile = "node.json"

// maxNodeIdentityBytes bounds node.json; a real one is about 200 bytes.
const maxNodeIdentityBytes = 64 << 10

// NodeIdentity is the content of node.json.
type NodeIdentity struct {
	NodeID string `json:"node_id"`
	// ClusterID is the id of the cluster the node belongs to, for operators (the
	// restore check compares the replicated state's id, not this copy of it).
	ClusterID string `json:"cluster_id"`
	// RaftAddr is the raft address other nodes dial (--raft-advertise, or --raft-listen).
	RaftAddr string `json:"raft_addr"`
	// APIAddr is the API address given to agents and the CLI (--advertise, or --listen).
	APIAddr   string    `json:"api_addr"`
	CreatedAt time.Time `json:"created_at"`
}

// ParseNodeIdentity decodes and checks node.json.
func ParseNodeIdentity(b []byte) (*NodeIdentity, error) {
	if len(b) > maxNodeIdentityBytes {
		return nil, fmt.Errorf("%d bytes, more than a node identity can be", len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var id NodeIdentity
	if err := dec.Decode(&id); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("data after the JSON object")
	}
	if !canonical.ValidName(id.NodeID) {
		return nil, fmt.Errorf("node_id %q is not a node id", id.NodeID)
	}
	if id.ClusterID != "" && (!strings.HasPrefix(id.ClusterID, ledger.ClusterIDPrefix) || len(id.ClusterID) > 64) {
		return nil, fmt.Errorf("cluster_id %q is not a cluster id", id.ClusterID)
	}
	if id.RaftAddr == "" || id.APIAddr == "" || len(id.RaftAddr) > 1024 || len(id.APIAddr) > 1024 {
		return nil, errors.New("raft_addr and api_addr must be set")
	}
	return &id, nil
}

// readNodeIdentity reads dir's node.json; nil without error when there is none (a new
// data dir, or one written by a build before node identities).
func readNodeIdentity(dir string) (*NodeIdentity, error) {
	path := filepath.Join(dir, NodeIdentityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("controlplane: read node identity: %w", err)
	}
	id, err := ParseNodeIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %s is damaged (%v); it says which node this data dir belongs to: restore it from a backup of this host, or give this node an empty data dir and join it anew", path, err)
	}
	return id, nil
}

func writeNodeIdentity(dir string, id *NodeIdentity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("controlplane: encode node identity: %w", err)
	}
	if err := fsutil.WriteFileAtomic(dir, NodeIdentityFile, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("controlplane: write node identity: %w", err)
	}
	return nil
}

// checkNodeID refuses a data dir that belongs to another node id.
func checkNodeID(dir string, id *NodeIdentity, nodeID string) error {
	if id == nil || id.NodeID == nodeID {
		return nil
	}
	return fmt.Errorf("controlplane: data dir %s belongs to node %q (%s), but this node was started with --node-id %q: "+
		"start it with --node-id %s, or give node %s its own empty data dir (to rename a node, remove it and join it anew: docs/operations.md, Replacing a dead node)",
		dir, id.NodeID, NodeIdentityFile, nodeID, id.NodeID, nodeID)
}

// errCopiedDataDir refuses a start at other addresses than the data dir's node has.
func errCopiedDataDir(dir, nodeID, source, raftWas, apiWas, raftNow, apiNow string) error {
	return fmt.Errorf("controlplane: data dir %s belongs to node %q at raft address %s and API address %s (%s), but this start has raft address %s and API address %s. "+
		"A copy of a node's data dir must never run as a second node: it would lead a second cluster with the same CA and admin tokens. "+
		"To add or replace a node, start it with an empty data dir and a server token (docs/operations.md, Replacing a dead node). "+
		"If this node really moved and its old copy is gone for good, start it once with --i-moved-this-node",
		dir, nodeID, raftWas, apiWas, source, raftNow, apiNow)
}

package controlplane_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane"
)

// FuzzParseNodeIdentity: any bytes in node.json give an identity that passes the
// checks, or an error; never a panic, and an accepted identity survives a round trip.
func FuzzParseNodeIdentity(f *testing.F) {
	good, _ := json.Marshal(controlplane.NodeIdentity{NodeID: "cp1", ClusterID: "cl_0123456789abcdef", RaftAddr: "10.0.0.1:7444", APIAddr: "10.0.0.1:7443", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	f.Add(good)
	f.Add([]byte(`{"node_id":"cp1","raft_addr":"a:1","api_addr":"a:2"}`))
	f.Add([]byte(`{"node_id":"CP 1","raft_addr":"a:1","api_addr":"a:2"}`))
	f.Add([]byte(`{"node_id":"cp1","cluster_id":"x","raft_addr":"a:1","api_addr":"a:2"}`))
	f.Add([]byte(`{"node_id":"cp1","raft_addr":"a:1","api_addr":"a:2","extra":1}`))
	f.Add([]byte(`{"node_id":"cp1","raft_addr":"a:1","api_addr":"a:2"} {}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := controlplane.ParseNodeIdentity(b)
		if err != nil {
			return
		}
		if id.NodeID == "" || id.RaftAddr == "" || id.APIAddr == "" || (id.ClusterID != "" && !strings.HasPrefix(id.ClusterID, "cl_")) {
			t.Fatalf("accepted %+v from %q", id, b)
		}
		again, err := json.Marshal(id)
		if err != nil {
			t.Fatal(err)
		}
		id2, err := controlplane.ParseNodeIdentity(again)
		if err != nil || *id2 != *id {
			t.Fatalf("round trip of %+v: %+v, %v", id, id2, err)
		}
	})
}

func TestParseNodeIdentity(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{`{"node_id":"cp1","cluster_id":"cl_0123456789abcdef","raft_addr":"a:1","api_addr":"a:2","created_at":"2026-01-02T03:04:05Z"}`, ""},
		{`{"node_id":"cp1","raft_addr":"a:1","api_addr":"a:2"}`, ""},
		{`{"node_id":"CP 1","raft_addr":"a:1","api_addr":"a:2"}`, "not a node id"},
		{`{"node_id":"cp1","cluster_id":"x","raft_addr":"a:1","api_addr":"a:2"}`, "not a cluster id"},
		{`{"node_id":"cp1","api_addr":"a:2"}`, "must be set"},
		{`{"node_id":"cp1","raft_addr":"a:1","api_addr":"a:2","x":1}`, "unknown field"},
		{`{"node_id":"cp1","raft_addr":"a:1","api_addr":"a:2"} {}`, "after the JSON object"},
		{``, "decode"},
	} {
		_, err := controlplane.ParseNodeIdentity([]byte(tc.in))
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseNodeIdentity(%s) = %v, want %q", tc.in, err, tc.err)
		}
	}
}

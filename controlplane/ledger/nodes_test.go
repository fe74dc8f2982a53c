package ledger

import (
	"testing"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func TestNodes(t *testing.T) {
	l := newLedger(t, false)
	idx := uint64(0)
	put := func(id, api string) {
		idx++
		if res, err := l.Apply(idx, at(idx), command(t, storev1.CommandType_COMMAND_TYPE_PUT_NODE, &storev1.PutNode{Id: id, ApiAddr: api, RaftAddr: api + "r"})); err != nil || res != nil {
			t.Fatalf("put node: %v %v", res, err)
		}
	}
	put("n2", "b:1")
	put("n1", "a:1")
	put("n2", "b:2")
	nodes, err := l.Nodes()
	if err != nil || len(nodes) != 2 || nodes[0].GetId() != "n1" || nodes[1].GetApiAddr() != "b:2" {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	idx++
	if _, err := l.Apply(idx, at(idx), command(t, storev1.CommandType_COMMAND_TYPE_REMOVE_NODE, &storev1.RemoveNode{Id: "n2"})); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := l.Node("n2"); ok {
		t.Fatal("removed node still there")
	}
	idx++
	res, err := l.Apply(idx, at(idx), command(t, storev1.CommandType_COMMAND_TYPE_PUT_NODE, &storev1.PutNode{}))
	if err != nil || res == nil {
		t.Fatalf("a node without id must be a result error, got %v %v", res, err)
	}
}

package controlplane_test

import (
	"strconv"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
)

func ledgerFilter() ledger.Filter { return ledger.Filter{} }

// lastSnapshotIndex reads the index of the node's newest raft snapshot.
func lastSnapshotIndex(s *controlplanetest.Server) (uint64, error) {
	return strconv.ParseUint(s.Store().Raft().Stats()["last_snapshot_index"], 10, 64)
}

// Package protocol holds the conventions agents, the CLI and control plane nodes share
// on the wire besides the protobuf APIs themselves (proto/), so neither side's packages
// have to import the other's.
package protocol

// LeaderHeader is the response header in which a node that is not the raft leader
// names the leader's API address (host:port), on its "not the leader" (unavailable)
// errors: agents, the CLI and joining nodes go straight there.
const LeaderHeader = "Crossdock-Leader"

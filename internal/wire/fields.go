// Package wire holds Crossdock's hand-written protobuf codecs: the encodings the hot
// paths write or walk in place instead of calling proto.Marshal / proto.Unmarshal
// (the event envelope, uplink batches, raft ingest payloads and log entries), and the
// field numbers they rely on, each pinned to the generated descriptors by
// TestFieldNumbers. DESIGN.md lists them and says why each codec exists.
package wire

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers written or read by hand. The names are Message_field; TestFieldNumbers
// checks every one against the descriptor of its message.
const (
	// crossdock.uplink.v1.StreamRequest
	StreamRequestBatch protowire.Number = 2
	// crossdock.uplink.v1.Batch
	BatchEvents protowire.Number = 1
	// crossdock.uplink.v1.OutboxEvent, identical on the wire to store.v1.AgentEvent
	// (TestOutboxEventIsAgentEvent): the leader puts the events an agent sent into the
	// raft entry unchanged.
	OutboxEventSeq   protowire.Number = 1
	OutboxEventEvent protowire.Number = 2
	// crossdock.store.v1.IngestBatch
	IngestBatchAgentID     protowire.Number = 1
	IngestBatchEvents      protowire.Number = 2
	IngestBatchIncarnation protowire.Number = 3
	// crossdock.store.v1.AgentEvent
	AgentEventAgentSeq protowire.Number = 1
	AgentEventEvent    protowire.Number = 2
	// crossdock.store.v1.Command
	CommandType               protowire.Number = 1
	CommandIgnorable          protowire.Number = 2
	CommandPayload            protowire.Number = 3
	CommandProposedAtUnixNano protowire.Number = 4
	// crossdock.store.v1.LogChunk
	LogChunkEvents protowire.Number = 4
	// crossdock.event.v1.CommittedEvent (AppendCommittedEvent)
	CommittedEventSeq         protowire.Number = 1
	CommittedEventEvent       protowire.Number = 2
	CommittedEventCommittedAt protowire.Number = 3
	CommittedEventAgent       protowire.Number = 4
	CommittedEventAgentSeq    protowire.Number = 5
	// crossdock.event.v1.Event (the payload fields 10-17 are the oneof's members in
	// declaration order, then 40, EventEdiInterchange, and 50-51, EventOrderCancel and
	// EventOrderStatus; encode.go and event.go write and read every field of every
	// payload message by hand, held to proto.Marshal and to the slow path by
	// TestAppendEventEveryField and FuzzEventValid).
	EventID           protowire.Number = 1
	EventType         protowire.Number = 2
	EventKeys         protowire.Number = 3
	EventOccurredAt   protowire.Number = 4
	EventSource       protowire.Number = 5
	EventTrace        protowire.Number = 6
	EventFirstPayload protowire.Number = 10
	EventLastPayload  protowire.Number = 17
	// EventEdiInterchange is the oneof member edi_interchange (EDI connector): encoded
	// by AppendEvent, never read in place (EventValid leaves it to the slow path).
	EventEdiInterchange protowire.Number = 40
	// EventOrderCancel and EventOrderStatus are the oneof members order_cancel and
	// order_status (orders): encoded by AppendEvent, never read in place.
	EventOrderCancel protowire.Number = 50
	EventOrderStatus protowire.Number = 51
	// Every map entry (protobuf's encoding of map fields): key and value.
	MapEntryKey   protowire.Number = 1
	MapEntryValue protowire.Number = 2
)

package ledger

import (
	"google.golang.org/protobuf/encoding/protowire"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// PartnerAgent is the pseudo-agent whose id space the events of a partner's API calls
// are committed in (orders, cancellations, return requests, order.status): an
// order sent twice is recognised by its id as an uplink event sent twice is.
// Agent names never contain ':', so it cannot collide with an enrolled agent.
func PartnerAgent(partner string) string { return "partner:" + partner }

// applySubmitPartnerEvents commits a partner's events as an IngestBatch of its
// pseudo-agent (PartnerAgent) whose agent seqs follow the pseudo-agent's committed seq:
// the same dedup and conflict rules as an agent's batch (applyIngestBatch), with agent
// seqs the FSM assigns so that any node may submit. The batch is written around the
// events' bytes as proposed (never re-encoded), so every replica stores the same bytes.
// Result: *storev1.IngestResult.
func applySubmitPartnerEvents(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var sub storev1.SubmitPartnerEvents
	if err := decodePayload(cmd, &sub); err != nil {
		return nil, err
	}
	if sub.GetPartner() == "" || len(sub.GetPartner()) > maxKeyPart {
		return &storev1.IngestResult{LastLedgerSeq: tx.lastSeq, Error: "partner name must be 1 to 1024 bytes"}, nil
	}
	agent := PartnerAgent(sub.GetPartner())
	rec := &storev1.AgentRecord{}
	if _, err := tx.getProto(agentKey(agent), rec); err != nil {
		return nil, err
	}
	// IngestBatch{agent_id: 1, events: 2 (AgentEvent{agent_seq: 1, event: 2}), incarnation: 3}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, agent)
	for i, ev := range sub.GetEvents() {
		var ae []byte
		ae = protowire.AppendTag(ae, 1, protowire.VarintType)
		ae = protowire.AppendVarint(ae, rec.GetCommittedSeq()+1+uint64(i))
		ae = protowire.AppendTag(ae, 2, protowire.BytesType)
		ae = protowire.AppendBytes(ae, ev)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, ae)
	}
	if inc := rec.GetIncarnation(); inc != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, inc)
	}
	return applyIngestBatch(tx, &storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, Payload: b, ProposedAtUnixNano: cmd.GetProposedAtUnixNano()})
}

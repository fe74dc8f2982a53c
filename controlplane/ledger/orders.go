package ledger

import (
	"fmt"

	"google.golang.org/protobuf/proto"

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
// seqs the FSM assigns so that any node may submit. Result: *storev1.IngestResult.
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
	batch := &storev1.IngestBatch{AgentId: agent, Incarnation: rec.GetIncarnation()}
	for i, ev := range sub.GetEvents() {
		batch.Events = append(batch.Events, &storev1.AgentEvent{AgentSeq: rec.GetCommittedSeq() + 1 + uint64(i), Event: ev})
	}
	payload, err := proto.Marshal(batch)
	if err != nil {
		return nil, fmt.Errorf("ledger: encode the batch of %s: %w", agent, err)
	}
	return applyIngestBatch(tx, &storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, Payload: payload, ProposedAtUnixNano: cmd.GetProposedAtUnixNano()})
}

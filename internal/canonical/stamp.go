package canonical

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Stamp prepares an event handed to an agent, the same way for every way in (the
// local API's Publish and connectors' batches), in this order:
//
//  1. Normalize (type and business keys from the payload) and ValidateFields.
//  2. Source: agent and connector are set to the agent's and the connector's names
//     (what the event said is replaced); the position is kept.
//  3. occurred_at defaults to now(): before the content is hashed, so a level going
//     10 → 5 → 10 does not repeat an id.
//  4. A missing position is a hash of the content (ContentPosition).
//  5. A missing id derives from (agent, connector, position) (ID).
//
// The caller encodes the event (AppendEvent) and checks the encoding's size
// (CheckSize): the control plane checks the same, and an event it refused would stop
// the uplink at that point of the outbox. now is called at most once.
func Stamp(ev *eventv1.Event, agent, connector string, now func() *timestamppb.Timestamp) error {
	Normalize(ev)
	if err := ValidateFields(ev); err != nil {
		return err
	}
	if ev.Source == nil {
		ev.Source = &eventv1.Source{}
	}
	ev.Source.Agent, ev.Source.Connector = agent, connector
	if ev.OccurredAt == nil {
		ev.OccurredAt = now()
	}
	if ev.Source.Position == "" {
		pos, err := ContentPosition(ev)
		if err != nil {
			return err
		}
		ev.Source.Position = pos
	}
	if ev.Id == "" {
		ev.Id = ID(agent, connector, ev.Source.Position)
	}
	return nil
}

package orders

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Notifier tells partners of their orders' status changes: on the leader, for every
// order whose status no order.status event names yet, it commits one (type
// order.status, keys order and partner, id "order.status:<order>:<cause seq>") in the
// partner's id space. Routes deliver order.status events to the partner's webhook or
// stream destinations like any other event (docs/partner-api.md#orders). Because the
// view folds the order.status events it committed, a new leader picks up whatever
// its predecessor had not told yet; the event id makes a second commit of the same
// change a duplicate.
type Notifier struct {
	View     *View
	IsLeader func() bool
	Submit   func(ctx context.Context, partner string, events []*eventv1.Event) (*storev1.IngestResult, error)
	Logger   *slog.Logger
	// Every bounds how long a change waits when the view does not move (1s when 0).
	Every time.Duration

	sent map[string]uint64 // order id -> cause seq committed (not yet folded)
}

// StatusEvent is the order.status event telling o's partner of its current status.
func StatusEvent(o *Order) *eventv1.Event {
	cause := o.statusSeq()
	at := o.UpdatedAt
	for _, s := range o.Steps {
		if s.Seq == cause {
			at = s.At
		}
	}
	return &eventv1.Event{
		Id:   "order.status:" + o.ID + ":" + strconv.FormatUint(cause, 10),
		Type: canonical.TypeOrderStatus,
		Keys: map[string]string{"order": o.ID, "partner": o.Partner},
		Payload: &eventv1.Event_OrderStatus{OrderStatus: &eventv1.OrderStatus{
			OrderNumber: o.ID, Partner: o.Partner, PurchaseOrderNumber: o.PurchaseOrderNumber, Status: o.Status,
			ErpOrderNumber: o.ERPOrderNumber, Message: o.Message, CauseSeq: cause, ChangedAt: timestamppb.New(at),
		}},
		Source: &eventv1.Source{Connector: "order-status", Position: o.ID + ":" + strconv.FormatUint(cause, 10)},
	}
}

// Run commits status events until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	every := n.Every
	if every <= 0 {
		every = time.Second
	}
	logger := n.Logger
	if logger == nil {
		logger = slog.Default()
	}
	n.sent = map[string]uint64{}
	for {
		n.View.waitM.Lock()
		ch := n.View.wait
		n.View.waitM.Unlock()
		if n.IsLeader() {
			if err := n.once(ctx); err != nil && ctx.Err() == nil {
				logger.Warn("order status notifications: commit failed; retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-time.After(every):
			clear(n.sent) // whatever was sent and not folded is sent again (a duplicate)
		}
	}
}

func (n *Notifier) once(ctx context.Context) error {
	byPartner := map[string][]*eventv1.Event{}
	var order []string
	for _, o := range n.View.Unnotified(256) {
		cause := o.statusSeq()
		if n.sent[o.ID] == cause {
			continue
		}
		if byPartner[o.Partner] == nil {
			order = append(order, o.Partner)
		}
		byPartner[o.Partner] = append(byPartner[o.Partner], StatusEvent(o))
		n.sent[o.ID] = cause
	}
	for _, p := range order {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := n.Submit(cctx, p, byPartner[p])
		cancel()
		if err != nil {
			for _, ev := range byPartner[p] {
				delete(n.sent, ev.GetKeys()["order"])
			}
			return err
		}
	}
	return nil
}

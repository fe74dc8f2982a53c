package ledger

import (
	"testing"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func TestAlertStatesHistoryAndNotified(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	put := func(state string, forget ...*storev1.AlertRef) {
		lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_ALERT_STATES, &storev1.PutAlertStates{
			Instances: []*storev1.AlertInstance{{Alert: "lag", Key: "destination=shop", State: state, Notified: true}},
			Forget:    forget,
		}))
	}
	put("firing")
	states, err := l.AlertStates()
	if err != nil || len(states) != 1 {
		t.Fatalf("AlertStates = %v, %v", states, err)
	}
	firing := states[0]
	if firing.GetNotified() || firing.GetChangedIndex() != 1 {
		t.Fatalf("a new change must be un-notified at its index: %v", firing)
	}
	put("resolved")
	// Marking the older change notified does not mark the newer one.
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_MARK_ALERTS_NOTIFIED, &storev1.MarkAlertsNotified{
		Refs: []*storev1.AlertRef{{Alert: "lag", Key: "destination=shop", ChangedIndex: 1}}}))
	states, _ = l.AlertStates()
	if states[0].GetState() != "resolved" || states[0].GetNotified() {
		t.Fatalf("after marking the old change: %v", states[0])
	}
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_MARK_ALERTS_NOTIFIED, &storev1.MarkAlertsNotified{
		Refs: []*storev1.AlertRef{{Alert: "lag", Key: "destination=shop", ChangedIndex: 2}}}))
	states, _ = l.AlertStates()
	if !states[0].GetNotified() {
		t.Fatalf("after marking the current change: %v", states[0])
	}
	h, err := l.AlertHistory("", 10)
	if err != nil || len(h) != 2 || h[0].GetState() != "resolved" || h[1].GetState() != "firing" {
		t.Fatalf("AlertHistory = %v, %v; want resolved then firing", h, err)
	}
	if h, _ := l.AlertHistory("other", 10); len(h) != 0 {
		t.Fatalf("history of another alert: %v", h)
	}
	// Survives a snapshot and restore.
	cp := testSnapshotRestore(t, l)
	if h, _ := cp.AlertHistory("lag", 10); len(h) != 2 {
		t.Fatalf("restored history: %v", h)
	}
	put("firing", &storev1.AlertRef{Alert: "lag", Key: "destination=shop"})
	if states, _ := l.AlertStates(); len(states) != 1 {
		t.Fatalf("forget then put in one entry: %v", states)
	}
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_ALERT_STATES, &storev1.PutAlertStates{
		Forget: []*storev1.AlertRef{{Alert: "lag", Key: "destination=shop"}}}))
	if states, _ := l.AlertStates(); len(states) != 0 {
		t.Fatalf("forgotten instance still listed: %v", states)
	}
}

func TestAlertHistoryIsBounded(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	batch := make([]*storev1.AlertInstance, 0, 1000)
	for i := range 1000 {
		batch = append(batch, &storev1.AlertInstance{Alert: "a", Key: string(rune('a' + i%26)), State: "firing"})
	}
	for range MaxAlertHistory/1000 + 2 {
		lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_ALERT_STATES, &storev1.PutAlertStates{Instances: batch}))
	}
	h, err := l.AlertHistory("", 2*MaxAlertHistory)
	if err != nil || len(h) != MaxAlertHistory {
		t.Fatalf("history holds %d changes (%v), want %d", len(h), err, MaxAlertHistory)
	}
	if h[0].GetChangedIndex() != uint64(len(lg.cmds)) {
		t.Fatalf("newest change is of index %d, want %d", h[0].GetChangedIndex(), len(lg.cmds))
	}
}

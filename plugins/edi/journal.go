package edi

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
	"github.com/crossdock/crossdock/internal/x12"
)

// Entry is the journal record of one interchange received or sent, kept as JSON in
// state_dir/journal/<partner>/ for `crossdock edi ls` and pruned after the retention.
type Entry struct {
	Partner   string    `json:"partner"`
	Direction string    `json:"direction"` // in or out
	Control   string    `json:"control"`   // ISA13
	File      string    `json:"file"`      // name on the transport
	Archive   string    `json:"archive"`   // original bytes, relative to state_dir
	At        time.Time `json:"at"`
	// Status of an inbound interchange: accepted, rejected or duplicate; of an
	// outbound one: sent.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// AckControl is the ISA13 of our 997/999/TA1 for an inbound interchange.
	AckControl string `json:"ackControl,omitempty"`
	// TA1 is the partner's interchange acknowledgement of an outbound interchange
	// (TA104 A, E or R, with the TA105 note), when one came.
	TA1    string       `json:"ta1,omitempty"`
	Groups []GroupEntry `json:"groups"`
}

// GroupEntry is one functional group of an interchange.
type GroupEntry struct {
	FunctionalID string     `json:"functionalId"`
	Control      string     `json:"control"`
	Version      string     `json:"version"`
	Sets         []SetEntry `json:"sets"`
	// Ack is the 997/999 status of the group: for inbound groups the one we sent, for
	// outbound ones the partner's ("" while none came), with when it came.
	Ack     string    `json:"ack,omitempty"`
	AckAt   time.Time `json:"ackAt,omitzero"`
	AckDue  time.Time `json:"ackDue,omitzero"` // outbound: when the partner's ack is overdue
	AckKind string    `json:"ackKind,omitempty"`
}

// SetEntry is one transaction set.
type SetEntry struct {
	ID      string `json:"id"`
	Control string `json:"control"`
	// Ref is the business reference: the PO number (850, 855, 856, 810), shipment or
	// invoice number.
	Ref    string `json:"ref,omitempty"`
	PO     string `json:"po,omitempty"`
	Order  string `json:"order,omitempty"` // the Crossdock order id (canonical.OrderID)
	Status string `json:"status"`          // A, E, R: ours for inbound sets, the partner's for outbound
	Event  string `json:"event,omitempty"`
}

// AckState is the acknowledgement state of an outbound group at t: acknowledged
// (A, E, P, R), "overdue" or "pending".
func (g GroupEntry) AckState(t time.Time) string {
	switch {
	case g.Ack != "":
		return g.Ack
	case !g.AckDue.IsZero() && t.After(g.AckDue):
		return "overdue"
	case g.AckDue.IsZero():
		return "none expected"
	}
	return "pending"
}

func journalName(e *Entry) string {
	return fmt.Sprintf("%s-%s-%09s.json", e.At.UTC().Format("20060102T150405"), e.Direction, e.Control)
}

func (c *Connector) journalDir(partner string) string {
	return filepath.Join(c.s.StateDir, "journal", partner)
}

func (c *Connector) writeJournal(e *Entry) error {
	dir := c.journalDir(e.Partner)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("edi: journal: %w", err)
	}
	b, _ := json.MarshalIndent(e, "", "  ")
	if err := fsutil.WriteFileAtomic(dir, journalName(e), b, 0o600); err != nil {
		return fmt.Errorf("edi: journal: %w", err)
	}
	return nil
}

// ReadJournal returns the journal entries of partner under stateDir, oldest first.
func ReadJournal(stateDir, partner string) ([]*Entry, error) {
	dir := filepath.Join(stateDir, "journal", partner)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("edi: no journal for partner %q in %s (check --state-dir and --partner)", partner, stateDir)
		}
		return nil, fmt.Errorf("edi: read journal: %w", err)
	}
	var out []*Entry
	for _, de := range ents {
		if !strings.HasSuffix(de.Name(), ".json") || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			return nil, fmt.Errorf("edi: read journal: %w", err)
		}
		e := &Entry{}
		if err := json.Unmarshal(b, e); err != nil {
			return nil, fmt.Errorf("edi: journal entry %s: %w", de.Name(), err)
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

// recordAck notes a partner's 997/999 on the outbound group it answers and returns
// the outbound interchange's entry as it is now (nil when there is none).
func (c *Connector) recordAck(partner, functionalID, groupControl, status, kind string, sets map[string]string, at time.Time) (*Entry, error) {
	entries, err := ReadJournal(c.s.StateDir, partner)
	if err != nil {
		return nil, err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Direction != "out" {
			continue
		}
		for gi := range e.Groups {
			g := &e.Groups[gi]
			if g.FunctionalID != functionalID || normControl(g.Control) != normControl(groupControl) {
				continue
			}
			g.Ack, g.AckAt, g.AckKind = status, at, kind
			for si := range g.Sets {
				if st, ok := sets[normControl(g.Sets[si].Control)]; ok {
					g.Sets[si].Status = st
				}
			}
			return e, c.writeJournal(e)
		}
	}
	c.log.Warn("acknowledgement for a group we have no record of", "partner", partner, "group", functionalID+" "+groupControl, "status", status)
	return nil, nil
}

// recordTA1 notes a partner's TA1 on the outbound interchange it answers and returns
// its entry as it is now (nil when there is none).
func (c *Connector) recordTA1(partner string, r x12.TA1Report) (*Entry, error) {
	entries, err := ReadJournal(c.s.StateDir, partner)
	if err != nil {
		return nil, err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Direction == "out" && normControl(e.Control) == normControl(r.Control) {
			e.TA1 = r.Status
			if r.Note != "" {
				e.TA1 += " " + r.Note
			}
			return e, c.writeJournal(e)
		}
	}
	c.log.Warn("TA1 for an interchange we have no record of", "partner", partner, "control", r.Control, "status", r.Status)
	return nil, nil
}

// prune removes archive files and journal entries older than the retention.
func (c *Connector) prune() {
	cut := c.now().Add(-c.retention)
	for _, dir := range []string{"archive/in", "archive/out", "sent", "journal", "orders"} {
		root := filepath.Join(c.s.StateDir, dir)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if info, err := d.Info(); err == nil && info.ModTime().Before(cut) {
				if err := os.Remove(p); err == nil {
					c.log.Debug("pruned", "file", p)
				}
			}
			return nil
		})
	}
}

// orderRef is what the connector remembers of an order it received, so an order.ack,
// shipment or invoice that carries only the Crossdock order number (as the ERP side
// publishes them) still finds its partner, PO number and PO date.
type orderRef struct {
	Partner string    `json:"partner"`
	PO      string    `json:"po"`
	Date    time.Time `json:"date,omitzero"`
}

func (c *Connector) saveOrderRef(orderID string, r orderRef) error {
	dir := filepath.Join(c.s.StateDir, "orders")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("edi: %w", err)
	}
	b, _ := json.Marshal(r)
	if err := fsutil.WriteFileAtomic(dir, orderID+".json", b, 0o600); err != nil {
		return fmt.Errorf("edi: %w", err)
	}
	return nil
}

func (c *Connector) loadOrderRef(orderID string) (orderRef, bool) {
	var r orderRef
	if orderID == "" || strings.ContainsAny(orderID, `/\.`) {
		return r, false
	}
	b, err := os.ReadFile(filepath.Join(c.s.StateDir, "orders", orderID+".json"))
	if err != nil || json.Unmarshal(b, &r) != nil {
		return r, false
	}
	return r, true
}

package edi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/edi"
	"github.com/crossdock/crossdock/internal/platform/fsutil"
	"github.com/crossdock/crossdock/internal/x12"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// FaultEnv, set to "pause-after-commit", makes the connector stop after the orders of
// a file are committed and before its acknowledgement is written, with a file
// "fault-paused" in state_dir: fault injection for the kill test only.
const FaultEnv = "CROSSDOCK_EDI_FAULT"

// maxBatch is the number of orders per emitted batch.
const maxBatch = 500

// Read implements sdk.Source: it polls the inbound folder until ctx ends, and commits
// the sink's control number reservations.
func (c *Connector) Read(ctx context.Context, from string, emit sdk.Emit) error {
	st, err := parseState(from)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.st, c.next, c.running = st, map[string]uint64{}, true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()
	c.log.Info("edi reading", "transport", c.s.Transport.Type, "inbound", c.s.Transport.Inbound, "partners", len(c.s.Partners))
	t := time.NewTicker(c.poll)
	defer t.Stop()
	lastPrune := time.Time{}
	for {
		if err := c.pollOnce(ctx, emit); err != nil {
			if errors.Is(err, sdk.ErrPermanent) || ctx.Err() != nil {
				return err
			}
			c.log.Warn("edi poll failed; retrying at the next poll", "err", err)
		}
		if c.now().Sub(lastPrune) > time.Hour {
			c.prune()
			lastPrune = c.now()
		}
		select {
		case <-ctx.Done():
			return nil
		case req := <-c.reqs:
			req.done <- c.commit(ctx, emit, req.events, eventIDs(req.events))
		case <-t.C:
		}
	}
}

// commit emits events with the current state as position; it returns when the agent
// has them durable.
func (c *Connector) commit(ctx context.Context, emit sdk.Emit, events []*eventv1.Event, positions []string) error {
	c.mu.Lock()
	pos := c.st.encode()
	c.mu.Unlock()
	return emit(ctx, sdk.Batch{Events: events, Position: pos, EventPositions: positions})
}

func (c *Connector) pollOnce(ctx context.Context, emit sdk.Emit) error {
	names, err := c.tr.List(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		if ctx.Err() != nil {
			return nil
		}
		if err := c.processFile(ctx, emit, name); err != nil {
			return fmt.Errorf("edi: file %s: %w", name, err)
		}
		// Serve a waiting sink between files.
		select {
		case req := <-c.reqs:
			req.done <- c.commit(ctx, emit, req.events, eventIDs(req.events))
		default:
		}
	}
	return nil
}

// fileResult collects what one file gives.
type fileResult struct {
	events    []*eventv1.Event
	positions []string
	acks      []pendingAck
	entries   []*Entry
	updated   []*Entry     // outbound interchanges whose acknowledgement came
	reasons   []string     // why interchanges were refused or skipped
	accepted  int          // interchanges accepted
	groups    []GroupEntry // of the interchange being read
}

type pendingAck struct {
	partner string
	index   int // in st.Seen[partner]
	ic      *x12.Interchange
	prof    *edi.Profile
}

func (c *Connector) processFile(ctx context.Context, emit sdk.Emit, name string) error {
	spool := filepath.Join(c.s.StateDir, "spool", name)
	f, err := os.Create(spool)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	h := sha256.New()
	if err := c.tr.Fetch(ctx, name, io.MultiWriter(f, h), c.s.MaxFileBytes); err != nil {
		f.Close()
		os.Remove(spool)
		if errors.Is(err, sdk.ErrPermanent) {
			return c.tr.Finish(ctx, name, err.Error())
		}
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("spool: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("spool: %w", err)
	}
	archive := filepath.Join("archive", "in", c.now().UTC().Format("20060102"), sum+"-"+name)
	res, readErr := c.readFile(f, name, sum, archive)
	f.Close()
	if readErr != nil && !isEnvelope(readErr) {
		return readErr
	}
	if readErr != nil {
		res.reasons = append(res.reasons, readErr.Error())
	}
	// The state of each interchange received, and of each sent one whose
	// acknowledgement came in this file, for the control plane (edi.interchange).
	norders := len(res.events)
	for _, e := range append(res.entries, res.updated...) {
		if e.Status == "duplicate" {
			continue
		}
		ev := interchangeEvent(e)
		res.events = append(res.events, ev)
		res.positions = append(res.positions, fmt.Sprintf("%s/%s/%s", e.Partner, normControl(e.Control), ev.Id))
	}
	// 1. The orders and the state (seen interchanges, control numbers of the acks),
	// committed together in the agent's outbox.
	for len(res.events) > maxBatch {
		if err := c.commit(ctx, emit, res.events[:maxBatch], res.positions[:maxBatch]); err != nil {
			return err
		}
		res.events, res.positions = res.events[maxBatch:], res.positions[maxBatch:]
	}
	if err := c.commit(ctx, emit, res.events, res.positions); err != nil {
		return err
	}
	if os.Getenv(FaultEnv) == "pause-after-commit" && len(res.acks) > 0 {
		// Fault injection (tests only): wait here to be killed.
		_ = os.WriteFile(filepath.Join(c.s.StateDir, "fault-paused"), []byte(name), 0o600)
		<-ctx.Done()
		return ctx.Err()
	}
	// 2. The acknowledgements, rebuilt from the committed numbers and time.
	for _, a := range res.acks {
		if err := c.sendAck(ctx, a); err != nil {
			return err
		}
	}
	// 3. The original bytes into the archive, the journal, the file out of the inbox.
	if err := os.MkdirAll(filepath.Dir(filepath.Join(c.s.StateDir, archive)), 0o700); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := os.Rename(spool, filepath.Join(c.s.StateDir, archive)); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	for _, e := range res.entries {
		if err := c.writeJournal(e); err != nil {
			return err
		}
	}
	for _, ev := range res.events {
		o := ev.GetOrder()
		if o == nil {
			continue
		}
		r := orderRef{Partner: o.GetPartner(), PO: o.GetPurchaseOrderNumber()}
		if o.GetOrderDate() != nil {
			r.Date = o.GetOrderDate().AsTime()
		}
		if err := c.saveOrderRef(o.GetOrderNumber(), r); err != nil {
			return err
		}
	}
	reason := ""
	if res.accepted == 0 && len(res.reasons) > 0 {
		reason = strings.Join(res.reasons, "\n")
	} else if len(res.reasons) > 0 {
		c.log.Warn("edi file partly refused", "file", name, "reasons", strings.Join(res.reasons, "; "))
	}
	if err := c.tr.Finish(ctx, name, reason); err != nil {
		return err
	}
	// 4. Mark the acknowledgements done (a restart before this rewrites the same files).
	c.mu.Lock()
	for _, a := range res.acks {
		c.st.Seen[a.partner][a.index].Done = true
	}
	c.mu.Unlock()
	c.log.Info("edi file processed", "file", name, "orders", norders, "acks", len(res.acks), "rejected", reason != "")
	return c.commit(ctx, emit, nil, nil)
}

func isEnvelope(err error) bool {
	var ee *x12.EnvelopeError
	return errors.As(err, &ee)
}

// readFile reads the interchanges of a spooled file into orders, acknowledgements to
// send and journal entries, updating the state (under c.mu) as it goes.
func (c *Connector) readFile(r io.Reader, name, sum, archive string) (*fileResult, error) {
	res := &fileResult{}
	var orders []*eventv1.Event
	var sets []SetEntry
	var acksIn []*x12.AckReport
	err := x12.Read(r, x12.Handler{
		Set: func(ic *x12.Interchange, g *x12.Group, s *x12.Set) error {
			p := c.bySender[strings.TrimSpace(ic.Header.SenderQual)+":"+strings.TrimSpace(ic.Header.SenderID)]
			se := SetEntry{ID: s.ID, Control: s.Control}
			switch {
			case p == nil:
			case s.ID == "850" && p.Receives("850"):
				o, errs := edi.Map850(s, edi.Options{Partner: p.Partner})
				edi.Apply(g, s, errs)
				for _, seg := range s.Segments {
					if seg.ID == "BEG" {
						se.Ref, se.PO = seg.Element(3).Value(), seg.Element(3).Value()
						break
					}
				}
				if se.PO != "" {
					se.Order = canonical.OrderID(p.Partner, se.PO)
				}
				if o != nil && s.Result.Status != x12.StatusRejected {
					o.OrderNumber = canonical.OrderID(p.Partner, o.GetPurchaseOrderNumber())
					ev := &eventv1.Event{Id: canonical.OrderEventID(p.Partner, o.GetPurchaseOrderNumber()),
						Type: canonical.TypeOrder, OccurredAt: isaTime(ic.Header), Payload: &eventv1.Event_Order{Order: o}}
					se.Event = ev.Id
					orders = append(orders, ev)
				}
			case s.ID == "997" || s.ID == "999":
				if rep, err := x12.ParseFunctionalAck(s); err == nil {
					acksIn = append(acksIn, rep)
				} else {
					c.log.Warn("unreadable acknowledgement", "file", name, "err", err)
				}
			}
			se.Status = s.Result.Status
			sets = append(sets, se)
			return nil
		},
		GroupEnd: func(ic *x12.Interchange, g *x12.Group) error {
			ge := GroupEntry{FunctionalID: g.FunctionalID, Control: g.Control, Version: g.Version, Sets: sets}
			if g.FunctionalID != "FA" {
				ge.Ack, _ = x12.GroupStatus(g)
				ge.AckKind = "997"
				if x12.Uses999(g.Version) {
					ge.AckKind = "999"
				}
			}
			sets = nil
			// Interchange-level groups are attached at InterchangeEnd.
			res.groups = append(res.groups, ge)
			return nil
		},
		InterchangeEnd: func(ic *x12.Interchange) error {
			groups := res.groups
			res.groups = nil
			c.endInterchange(res, ic, groups, orders, acksIn, name, sum, archive)
			orders, acksIn = nil, nil
			return nil
		},
	})
	return res, err
}

func isaTime(h x12.Header) *timestamppb.Timestamp {
	t, err := time.Parse("0601021504", h.Date+h.Time)
	if err != nil {
		return nil
	}
	return timestamppb.New(t)
}

func (c *Connector) endInterchange(res *fileResult, ic *x12.Interchange, groups []GroupEntry, orders []*eventv1.Event, acksIn []*x12.AckReport, name, sum, archive string) {
	sender := strings.TrimSpace(ic.Header.SenderQual) + ":" + strings.TrimSpace(ic.Header.SenderID)
	control := ic.Header.Control
	p := c.bySender[sender]
	if p == nil {
		res.reasons = append(res.reasons, fmt.Sprintf("interchange %s from %s (segment %d): no trading partner profile for sender %s; add one to the connector's partners", control, sender, ic.FilePos, sender))
		return
	}
	// The time of an interchange seen before (a file re-read after a restart) is the
	// one committed with it, so its acknowledgement and events come out the same.
	now := c.now().Truncate(time.Second)
	e := &Entry{Partner: p.Partner, Direction: "in", Control: control, File: name, Archive: archive, At: now, Status: "accepted", Groups: groups}
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := c.st.find(p.Partner, control)
	if idx >= 0 && c.st.Seen[p.Partner][idx].At != 0 {
		now = time.Unix(c.st.Seen[p.Partner][idx].At, 0)
		e.At = now
	}
	if idx >= 0 && c.st.Seen[p.Partner][idx].File != sum {
		// A resent interchange: same sender and ISA13 in another file.
		reason := fmt.Sprintf("interchange %s from %s (segment %d) is a duplicate: this control number was already received; it is not processed again", control, sender, ic.FilePos)
		res.reasons = append(res.reasons, reason)
		e.Status, e.Reason = "duplicate", reason
		res.entries = append(res.entries, e)
		return
	}
	if ic.Err != nil {
		e.Status, e.Reason = "rejected", ic.Err.Error()
		res.reasons = append(res.reasons, fmt.Sprintf("interchange %s from %s refused: %v", control, sender, ic.Err))
		orders = nil
	} else if ic.Header.Usage != "" && ic.Header.Usage != p.Usage {
		e.Status = "rejected"
		e.Reason = fmt.Sprintf("usage indicator ISA15 %q but the profile of %s says %q: not processed", ic.Header.Usage, p.Partner, p.Usage)
		res.reasons = append(res.reasons, e.Reason)
		orders = nil
	} else {
		res.accepted++
	}
	for _, o := range orders {
		res.events = append(res.events, o)
		res.positions = append(res.positions, fmt.Sprintf("%s/%s/%s", p.Partner, normControl(control), o.Id))
	}
	for _, a := range acksIn {
		sets := map[string]string{}
		for _, s := range a.Sets {
			sets[normControl(s.Control)] = s.Status
		}
		if u, err := c.recordAckLocked(p.Partner, a, sets, now); err != nil {
			c.log.Warn("recording an acknowledgement", "err", err)
		} else if u != nil {
			res.updated = append(res.updated, u)
		}
	}
	for _, seg := range ic.TA1 {
		if r, err := x12.ParseTA1(seg); err == nil {
			if u, err := c.recordTA1(p.Partner, r); err != nil {
				c.log.Warn("recording a TA1", "err", err)
			} else if u != nil {
				res.updated = append(res.updated, u)
			}
		} else {
			c.log.Warn("unreadable TA1", "file", name, "err", err)
		}
	}
	ack := x12.Acknowledge(ic, x12.AckOptions{Now: now, Delimiters: p.Delimiters(), Usage: p.Usage})
	sn := seen{Control: control, File: sum}
	if idx >= 0 {
		sn = c.st.Seen[p.Partner][idx] // the same file again after a restart: same acknowledgement
	} else if ack != nil {
		base, err := c.alloc(p.Partner, 1+len(ack.Groups))
		if err != nil {
			res.reasons = append(res.reasons, err.Error())
			return
		}
		c.used(p.Partner)
		sn.Ack = base
	}
	if idx < 0 {
		sn.At = now.Unix()
	}
	if idx < 0 {
		c.st.remember(p.Partner, sn, c.s.DedupWindow)
		idx = len(c.st.Seen[p.Partner]) - 1
	}
	if sn.Ack != 0 {
		e.AckControl = fmt.Sprintf("%09d", sn.Ack)
		for i := range e.Groups {
			if e.Groups[i].Ack != "" {
				e.Groups[i].AckAt = time.Unix(sn.At, 0).UTC()
			}
		}
		if !sn.Done {
			res.acks = append(res.acks, pendingAck{partner: p.Partner, index: idx, ic: ic, prof: p})
		}
	}
	res.entries = append(res.entries, e)
}

func (c *Connector) recordAckLocked(partner string, a *x12.AckReport, sets map[string]string, at time.Time) (*Entry, error) {
	return c.recordAck(partner, a.FunctionalID, a.GroupControl, a.Status, a.Kind, sets, at)
}

// sendAck writes the acknowledgement of an interchange with its committed numbers.
func (c *Connector) sendAck(ctx context.Context, a pendingAck) error {
	c.mu.Lock()
	sn := c.st.Seen[a.partner][a.index]
	c.mu.Unlock()
	at := time.Unix(sn.At, 0).UTC()
	ack := x12.Acknowledge(a.ic, x12.AckOptions{Now: at, Delimiters: a.prof.Delimiters(), Usage: a.prof.Usage})
	if ack == nil {
		return nil
	}
	var buf bytes.Buffer
	if err := x12.NewWriter(&buf, a.prof.Delimiters(), newFixed(sn.Ack)).Write(ack); err != nil {
		return fmt.Errorf("edi: write acknowledgement: %w", err)
	}
	kind := "TA1"
	if len(ack.Groups) > 0 {
		kind = ack.Groups[0].Sets[0].ID
	}
	name := fmt.Sprintf("%s-%s-%09d.x12", a.partner, kind, sn.Ack)
	if err := c.archiveOut(name, buf.Bytes()); err != nil {
		return err
	}
	if err := c.tr.Put(ctx, name, buf.Bytes()); err != nil {
		return err
	}
	c.log.Info("edi acknowledgement sent", "partner", a.partner, "file", name, "for", a.ic.Header.Control)
	return nil
}

func (c *Connector) archiveOut(name string, data []byte) error {
	dir := filepath.Join(c.s.StateDir, "archive", "out", c.now().UTC().Format("20060102"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("edi: archive: %w", err)
	}
	if err := fsutil.WriteFileAtomic(dir, name, data, 0o600); err != nil {
		return fmt.Errorf("edi: archive: %w", err)
	}
	return nil
}

package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/archive"
	"github.com/crossdock/crossdock/controlplane/delivery"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// ArchiveBackend is what ListArchive and ReplayArchive need: this node's archive (the
// events it pruned, see controlplane/archive) and the delivery engine replays run in.
type ArchiveBackend struct {
	Dir    *archive.Dir
	Engine *delivery.Engine
}

func (a *Admin) archiveDir() (*archive.Dir, error) {
	if a.Archive.Dir == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this node keeps no archive (started without --archive-dir)"))
	}
	return a.Archive.Dir, nil
}

func archiveFilter(from, to *timestamppb.Timestamp, types []string) (archive.Filter, error) {
	f := archive.Filter{Types: types}
	if from != nil {
		f.From = from.AsTime()
	}
	if to != nil {
		f.To = to.AsTime()
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return f, fmt.Errorf("from %s is not before to %s", f.From.Format(time.RFC3339), f.To.Format(time.RFC3339))
	}
	return f, nil
}

func apiArchiveFile(fi archive.FileInfo) *adminv1.ArchiveFile {
	return &adminv1.ArchiveFile{
		Name: fi.Name, Day: fi.Day(), Type: fi.Type, Events: fi.Events, FirstSeq: fi.FirstSeq, LastSeq: fi.LastSeq,
		FirstTime: timestamppb.New(fi.FirstTime), LastTime: timestamppb.New(fi.LastTime), Bytes: fi.Bytes, Sha256: fi.SHA256,
	}
}

// ListArchive lists this node's archive files; any node answers for its own archive.
func (a *Admin) ListArchive(ctx context.Context, req *connect.Request[adminv1.ListArchiveRequest]) (*connect.Response[adminv1.ListArchiveResponse], error) {
	d, err := a.archiveDir()
	if err != nil {
		return nil, err
	}
	m := req.Msg
	f, err := archiveFilter(m.GetFrom(), m.GetTo(), m.GetTypes())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	l, err := d.List(ctx, f)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out := &adminv1.ListArchiveResponse{Node: a.Store.NodeID(), Verified: m.GetVerify()}
	for _, dm := range l.Damaged {
		out.Files = append(out.Files, &adminv1.ArchiveFile{Name: dm.Name, Day: strings.ReplaceAll(strings.TrimSuffix(dm.Name, "/manifest.json"), "/", "-"), Damage: dm.Reason})
	}
	for _, fi := range l.Files {
		af := apiArchiveFile(fi)
		check := d.Stat
		if m.GetVerify() {
			check = d.Check
		}
		if err := check(ctx, fi); err != nil {
			var de *archive.DamagedError
			if !errors.As(err, &de) {
				return nil, connect.NewError(connect.CodeInternal, err)
			}
			af.Damage = de.Reason
		}
		out.Files = append(out.Files, af)
	}
	return connect.NewResponse(out), nil
}

// ReplayArchive sends archived events a route matches to its destination again, on the
// leader from its own archive, and streams progress. Every selected file is checked
// (checksum and records) before anything is sent: a damaged file stops the replay
// before it starts, naming the file.
func (a *Admin) ReplayArchive(ctx context.Context, req *connect.Request[adminv1.ReplayArchiveRequest], stream *connect.ServerStream[adminv1.ReplayArchiveResponse]) error {
	m := req.Msg
	switch {
	case m.GetRoute() == "":
		return connect.NewError(connect.CodeInvalidArgument, errors.New("route: required"))
	case m.GetFrom() == nil:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("from: required: the commit time the archived events to send start at"))
	}
	d, err := a.archiveDir()
	if err != nil {
		return err
	}
	if a.Archive.Engine == nil {
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("this node runs no delivery engine"))
	}
	to := m.GetTo()
	if to == nil {
		to = timestamppb.Now()
	}
	f, err := archiveFilter(m.GetFrom(), to, m.GetTypes())
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := a.ConsistentRead(ctx); err != nil {
		return err
	}
	plan, err := a.Archive.Engine.Plan()
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	var dests []string
	for _, r := range plan.Routes {
		if r.Name == m.GetRoute() {
			dests = r.Destinations
		}
	}
	if dests == nil {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("route: no route %q (see crossdock routes ls)", m.GetRoute()))
	}
	dest := m.GetDestination()
	switch {
	case dest != "" && !slices.Contains(dests, dest):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("destination: route %s does not feed %q (it feeds %s)", m.GetRoute(), dest, strings.Join(dests, ", ")))
	case dest == "" && len(dests) > 1:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("destination: route %s feeds %s; name one", m.GetRoute(), strings.Join(dests, ", ")))
	case dest == "":
		dest = dests[0]
	}

	// Check every file first: all or nothing.
	l, err := d.List(ctx, f)
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	if len(l.Damaged) > 0 {
		return damagedError(l.Damaged[0])
	}
	node := a.Store.NodeID()
	var total uint64
	for _, fi := range l.Files {
		n, err := d.Count(ctx, fi, f)
		if err != nil {
			var de *archive.DamagedError
			if errors.As(err, &de) {
				return damagedError(de)
			}
			return connect.NewError(connect.CodeInternal, err)
		}
		total += n
	}
	cur := &adminv1.ReplayArchiveResponse{Destination: dest, Files: uint32(len(l.Files)), Total: total, Node: node}
	if total == 0 {
		cur.Done = true
		return stream.Send(cur)
	}
	it, err := d.Events(ctx, f)
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	run, err := a.Archive.Engine.ReplayArchive(ctx, m.GetRoute(), dest, it)
	if err != nil {
		if errors.Is(err, delivery.ErrNoWorker) && !a.Store.IsLeader() {
			return a.notLeader()
		}
		return connect.NewError(connect.CodeUnavailable, err)
	}
	defer run.Stop()
	a.Logger.Info("archive replay started", "route", m.GetRoute(), "destination", dest, "from", f.From, "to", f.To, "files", len(l.Files), "events", total, "audit", true)
	if err := stream.Send(cur); err != nil {
		return err
	}
	lastSent := time.Now()
	for {
		p, changed := run.Progress()
		next := &adminv1.ReplayArchiveResponse{
			Destination: dest, Files: uint32(len(l.Files)), Total: total, Node: node,
			Scanned: p.Scanned, Sent: p.Sent, DeadLettered: p.DeadLettered, Coalesced: p.Coalesced, Done: p.Done,
		}
		if p.Done && p.Err != nil {
			a.Logger.Warn("archive replay ended early", "route", m.GetRoute(), "destination", dest, "scanned", p.Scanned, "sent", p.Sent, "err", p.Err)
			var de *archive.DamagedError
			if errors.As(p.Err, &de) {
				return damagedError(de)
			}
			return connect.NewError(connect.CodeAborted, fmt.Errorf("archive replay stopped after %d of %d events (%d sent): %w", p.Scanned, total, p.Sent, p.Err))
		}
		moved := next.GetScanned() != cur.GetScanned() || next.GetSent() != cur.GetSent() || next.GetDeadLettered() != cur.GetDeadLettered() || next.GetCoalesced() != cur.GetCoalesced()
		if p.Done || (moved && time.Since(lastSent) >= progressEvery) {
			if err := stream.Send(next); err != nil {
				return err
			}
			cur, lastSent = next, time.Now()
		}
		if p.Done {
			a.Logger.Info("archive replay done", "route", m.GetRoute(), "destination", dest, "scanned", p.Scanned, "sent", p.Sent, "dead_lettered", p.DeadLettered, "coalesced", p.Coalesced)
			return nil
		}
		wait := progressEvery // progress that moved is sent at most this often
		if moved {
			wait = max(time.Until(lastSent.Add(progressEvery)), time.Millisecond)
			changed = nil // already moved: wait for the interval, not the next change
		}
		select {
		case <-ctx.Done():
			return nil // the caller left: Stop ends the reading; queued messages are still sent
		case <-changed:
		case <-time.After(wait):
		}
	}
}

// progressEvery is how often ReplayArchive reports progress while it moves.
const progressEvery = 200 * time.Millisecond

func damagedError(de *archive.DamagedError) error {
	return connect.NewError(connect.CodeDataLoss, fmt.Errorf("%w; nothing was sent. Check the archive with crossdock archive verify, and restore the file from another node's archive (every node keeps its own copy)", de))
}

package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/archive"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// archivedLevels makes n inventory levels of distinct SKUs (so nothing coalesces) and,
// between them, orders the stock route does not match; seqs from first, a minute apart.
func archivedLevels(first uint64, n int, at time.Time) []*eventv1.CommittedEvent {
	var out []*eventv1.CommittedEvent
	for i := range n {
		seq := first + uint64(2*i)
		sku := fmt.Sprintf("ARCH-%03d", i)
		out = append(out, &eventv1.CommittedEvent{Seq: seq, CommittedAt: timestamppb.New(at.Add(time.Duration(2*i) * time.Minute)), Event: &eventv1.Event{
			Id: fmt.Sprintf("ev_archived_%03d", i), Type: "inventory.level", Keys: map[string]string{"sku": sku},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: "WH1", OnHand: fmt.Sprint(i), Available: fmt.Sprint(i)}},
		}}, &eventv1.CommittedEvent{Seq: seq + 1, CommittedAt: timestamppb.New(at.Add(time.Duration(2*i+1) * time.Minute)), Event: &eventv1.Event{
			Id: fmt.Sprintf("ev_order_%03d", i), Type: "order", Keys: map[string]string{"order_number": fmt.Sprint(i)},
			Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: fmt.Sprint(i)}},
		}})
	}
	return out
}

// waitArchiveRun waits until run is done and returns its final progress.
func waitArchiveRun(t *testing.T, run *delivery.ArchiveRun) delivery.ArchiveProgress {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		p, changed := run.Progress()
		if p.Done {
			return p
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("archive replay not done after 60s: %+v", p)
		}
	}
}

// startArchiveReplay starts a replay of every archived event through route stock to
// shop, waiting for the engine to lead and run the worker.
func startArchiveReplay(t *testing.T, e *delivery.Engine, d *archive.Dir) *delivery.ArchiveRun {
	t.Helper()
	var run *delivery.ArchiveRun
	controlplanetest.WaitFor(t, 30*time.Second, "the shop worker to take an archive replay", func() bool {
		it, err := d.Events(context.Background(), archive.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		run, err = e.ReplayArchive(context.Background(), "stock", "shop", it)
		if err != nil && !errors.Is(err, delivery.ErrNoWorker) {
			t.Fatal(err)
		}
		return err == nil
	})
	return run
}

// TestArchiveReplay: events written to the archive the way the ledger's prune does
// (Dir.Archive), replayed to a real HTTP receiver through the engine: each archived event
// the route matches arrives once, signed, with its original id as webhook-id; the events
// the route does not match are read and not sent.
func TestArchiveReplay(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, url := market(t, samplemarket.Config{})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret, Timeout: 5 * time.Second}},
		Routes:       []delivery.Route{stockRoute("stock", "shop")},
	}
	e := runEngine(t, srv.Store(), plan)
	d, err := archive.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d.MaxFileEvents = 10 // several files per type
	evs := archivedLevels(1000, 60, time.Date(2026, 12, 3, 23, 0, 0, 0, time.UTC))
	if err := d.Archive(context.Background(), evs); err != nil {
		t.Fatal(err)
	}

	p := waitArchiveRun(t, startArchiveReplay(t, e, d))
	if p.Err != nil || p.Scanned != 120 || p.Sent != 60 || p.DeadLettered != 0 {
		t.Fatalf("progress %+v; want 120 scanned, 60 sent, no error", p)
	}
	seen := map[string]int{}
	for _, r := range m.Requests() {
		if !r.SignatureOK {
			t.Errorf("request %s: signature does not verify", r.ID)
		}
		seen[r.ID]++
		for _, msg := range received(t, []samplemarket.Request{r}) {
			if msg.ID != r.ID {
				t.Errorf("webhook-id %s carries event %s", r.ID, msg.ID)
			}
		}
	}
	for i := range 60 {
		id := fmt.Sprintf("ev_archived_%03d", i)
		if seen[id] != 1 {
			t.Errorf("%s delivered %d times, want once", id, seen[id])
		}
	}
	if len(seen) != 60 {
		t.Errorf("%d distinct webhook-ids delivered, want 60: %v", len(seen), seen)
	}
	if q := m.Quantities(); q["ARCH-059"] != "59" {
		t.Errorf("receiver quantities: %v", q)
	}
}

// TestArchiveReplayDamagedFile: a file damaged in the middle of the archive stops the
// replay with an error naming it, and none of its events is sent.
func TestArchiveReplayDamagedFile(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, url := market(t, samplemarket.Config{})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret, Timeout: 5 * time.Second}},
		Routes:       []delivery.Route{stockRoute("stock", "shop")},
	}
	e := runEngine(t, srv.Store(), plan)
	root := t.TempDir()
	d, err := archive.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	d.MaxFileEvents = 10
	if err := d.Archive(context.Background(), archivedLevels(1000, 40, time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC))); err != nil {
		t.Fatal(err)
	}
	// The second inventory file: events ev_archived_010..019 (seqs 1020..1038).
	name := "2026/12/03/inventory.level/000000001020-000000001038.pb.gz"
	p := filepath.Join(root, filepath.FromSlash(name))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}

	prog := waitArchiveRun(t, startArchiveReplay(t, e, d))
	var de *archive.DamagedError
	if !errors.As(prog.Err, &de) || de.Name != name || !strings.Contains(prog.Err.Error(), "checksum mismatch") {
		t.Fatalf("replay ended with %v; want the damaged file %s named", prog.Err, name)
	}
	seen := map[string]bool{}
	for _, r := range m.Requests() {
		seen[r.ID] = true
	}
	for i := 10; i < 20; i++ {
		if id := fmt.Sprintf("ev_archived_%03d", i); seen[id] {
			t.Errorf("%s of the damaged file was sent", id)
		}
	}
	if prog.Sent != uint64(len(seen)) || prog.Sent > 10 {
		t.Errorf("progress says %d sent, the receiver saw %d ids (at most the 10 of the first file may go)", prog.Sent, len(seen))
	}
}

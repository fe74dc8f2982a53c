package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/archive"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestArchiveCLI drives the archive through the built binary: events written into the
// server's archive directory the way the ledger's prune writes them (Dir.Archive, the
// hook), then `archive ls`, `ls --days`, `verify`, `cat`, and `archive replay` to a
// sample marketplace, which receives each archived level once under its original id;
// then one file is damaged: ls flags it, verify fails naming it, replay stops before
// sending anything.
func TestArchiveCLI(t *testing.T) {
	c := startServer(t, "--webhook-allow", "127.0.0.1/32")
	m, err := samplemarket.New(samplemarket.Config{Secret: e2eSecret})
	if err != nil {
		t.Fatal(err)
	}
	ms := httptest.NewServer(m)
	t.Cleanup(ms.Close)
	dir := t.TempDir()
	docs := writeFile(t, filepath.Join(dir, "shop.yaml"), fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec:
  destination: shop
  match: {types: [inventory.level]}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": event.inventory_level.available, "id": event.id}
`, ms.URL, e2eSecret))
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--config", c.config)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cli("apply", "-f", docs)

	// 30 levels and 30 orders, one a minute from 23:30 on Dec 2 (UTC): two days.
	arch, err := archive.OpenDir(filepath.Join(c.dataDir, "archive"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 23, 30, 0, 0, time.UTC)
	var evs []*eventv1.CommittedEvent
	for i := range 30 {
		sku := fmt.Sprintf("ARCH-%02d", i)
		evs = append(evs, &eventv1.CommittedEvent{Seq: uint64(1001 + 2*i), CommittedAt: timestamppb.New(at.Add(time.Duration(2*i) * time.Minute)), Event: &eventv1.Event{
			Id: fmt.Sprintf("ev_archived_%02d", i), Type: "inventory.level", Keys: map[string]string{"sku": sku},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: "WH1", OnHand: fmt.Sprint(i), Available: fmt.Sprint(i)}},
		}}, &eventv1.CommittedEvent{Seq: uint64(1002 + 2*i), CommittedAt: timestamppb.New(at.Add(time.Duration(2*i+1) * time.Minute)), Event: &eventv1.Event{
			Id: fmt.Sprintf("ev_order_%02d", i), Type: "order", Keys: map[string]string{"order_number": fmt.Sprintf("SO-%d", i)},
			Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: fmt.Sprintf("SO-%d", i)}},
		}})
	}
	if err := arch.Archive(context.Background(), evs); err != nil {
		t.Fatal(err)
	}

	levels := "2026/12/03/inventory.level/000000001031-000000001059.pb.gz"
	out := cli("archive", "ls")
	mustContain(t, out, "2026/12/02/inventory.level/000000001001-000000001029.pb.gz", levels, "15  ", "1031..1059",
		"4 files, 60 events", "in the archive of node cp1")
	if strings.Contains(out, "DAMAGED") {
		t.Fatalf("archive ls flags a damaged file:\n%s", out)
	}
	mustContain(t, cli("archive", "ls", "--days"), "2026-12-02  2      30", "2026-12-03  2      30")
	out = cli("archive", "ls", "--type", "order", "--from", "2026-12-03")
	mustContain(t, out, "2026/12/03/order/", "1 files, 15 events")
	mustContain(t, cli("archive", "verify"), "verified 4 files, 60 events")
	out = cli("archive", "cat", filepath.Join(c.dataDir, "archive", filepath.FromSlash(levels)))
	mustContain(t, out, `"id":"ev_archived_15"`, `"seq":"1059"`)
	if n := strings.Count(out, "\n"); n != 15 {
		t.Fatalf("archive cat printed %d lines, want 15:\n%s", n, out)
	}

	stdout, stderr, err := runEnv(t, nil, "archive", "replay", "--route", "shop-stock", "--from", "2026-12-02", "--to", "2026-12-04", "--config", c.config)
	if err != nil {
		t.Fatalf("archive replay: %v\n%s\n%s", err, stdout, stderr)
	}
	mustContain(t, stderr, "archive replay to shop (node cp1): 0/60 events read", "60/60 events read, 30 sent")
	mustContain(t, stdout, "archive replay to shop done: 60 events from 4 files, 30 sent, 0 dead-lettered")
	ids := map[string]int{}
	for _, r := range m.Requests() {
		if !r.SignatureOK {
			t.Errorf("request %s: bad signature", r.ID)
		}
		ids[r.ID]++
		for _, msg := range r.Messages {
			if !strings.Contains(string(msg.Raw), `"id":"`+r.ID+`"`) {
				t.Errorf("webhook-id %s on message %s", r.ID, msg.Raw)
			}
		}
	}
	for i := range 30 {
		if id := fmt.Sprintf("ev_archived_%02d", i); ids[id] != 1 {
			t.Errorf("%s received %d times, want once", id, ids[id])
		}
	}
	if len(ids) != 30 {
		t.Errorf("%d distinct ids received, want 30", len(ids))
	}

	// Damage the Dec 3 levels file (same size, one byte flipped).
	p := filepath.Join(c.dataDir, "archive", filepath.FromSlash(levels))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := len(m.Requests())
	out, err = run(t, "archive", "verify", "--config", c.config)
	if err == nil {
		t.Fatalf("archive verify passed a damaged file:\n%s", out)
	}
	mustContain(t, out, "DAMAGED "+levels+": checksum mismatch")
	mustContain(t, err.Error(), "1 of 4 archive files on node cp1 are damaged")
	// Truncate it too: ls, which only compares sizes, flags it.
	if err := os.WriteFile(p, b[:len(b)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	mustContain(t, cli("archive", "ls"), levels, "DAMAGED: ", "bytes, the manifest says", "1 DAMAGED")
	stdout, stderr, err = runEnv(t, nil, "archive", "replay", "--route", "shop-stock", "--from", "2026-12-02", "--config", c.config)
	if err == nil {
		t.Fatalf("archive replay over a damaged file succeeded:\n%s\n%s", stdout, stderr)
	}
	mustContain(t, stderr, levels+" is damaged: checksum mismatch", "nothing was sent")
	if n := len(m.Requests()); n != before {
		t.Fatalf("the marketplace got %d more requests from a replay over a damaged file", n-before)
	}
	out, err = run(t, "archive", "replay", "--route", "shop-stock", "--config", c.config)
	if err == nil || !strings.Contains(err.Error(), "--from: required") {
		t.Fatalf("replay without --from: %v\n%s", err, out)
	}
}

// FuzzParseArchiveTime: --from and --to give a time or a clear error, never a panic.
func FuzzParseArchiveTime(f *testing.F) {
	for _, s := range []string{"2026-12-04", "2026-12-04T08:00:00Z", "36h", "", "-1h", "2026-13-01", "tomorrow"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := parseArchiveTime("--from", s, now)
		if err != nil {
			if !strings.Contains(err.Error(), "--from") {
				t.Fatalf("error does not name the flag: %v", err)
			}
			return
		}
		if s != "" && ts == nil {
			t.Fatalf("%q parsed to no time without an error", s)
		}
	})
}

package sql

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestUnderPluginHostSIGKILL runs the connector as a real plugin process under the
// agent's plugin host, SIGKILLs it twice while rows keep arriving, and checks that the
// outbox holds every row exactly once, with the ids the positions give. A kill that
// comes after every row was captured proves nothing: the test fails then.
func TestUnderPluginHostSIGKILL(t *testing.T) {
	bin, sum := testutil.BuildPlugin(t, "./testdata/sqlplugin")

	b := startSQLite(t)
	b.ddl(t, `CREATE TABLE stock_k (id INT_T PRIMARY KEY, sku TEXT_T NOT NULL, location TEXT_T NOT NULL, qty DEC_T NOT NULL, updated_at TS_T)`)
	const total, group = 3000, 10 // rows; rows per transaction, sharing one timestamp
	writerDone := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the ERP keeps writing while the plugin is killed
		for g := 0; g < total/group; g++ {
			tx, err := b.db.BeginTx(ctx, nil)
			if err != nil {
				writerDone <- err
				return
			}
			for i := 1; i <= group; i++ {
				id := g*group + i
				if _, err := tx.Exec(`INSERT INTO stock_k VALUES (?, ?, 'MAIN', ?, ?)`, id, fmt.Sprintf("S%05d", id), id, b.ts(t0.Add(time.Duration(g)*time.Millisecond))); err != nil {
					tx.Rollback()
					writerDone <- err
					return
				}
			}
			if err := tx.Commit(); err != nil {
				writerDone <- err
				return
			}
			select {
			case <-ctx.Done():
				writerDone <- ctx.Err()
				return
			case <-time.After(5 * time.Millisecond): // pacing the simulated ERP, not waiting for a condition
			}
		}
		writerDone <- nil
	}()

	settings, _ := json.Marshal(stockSettings(b, "stock_k", map[string]any{"batch_size": 50}))
	ob, err := outbox.Open(outbox.Options{Dir: filepath.Join(t.TempDir(), "outbox"), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	h, err := pluginhost.New(pluginhost.Options{AgentID: "agent-1", Outbox: ob, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		[]pluginhost.Connector{{Name: "erp", Path: bin, SHA256: sum, Settings: settings}})
	if err != nil {
		t.Fatal(err)
	}
	hctx, stop := context.WithCancel(context.Background())
	hostDone := make(chan struct{})
	go func() { defer close(hostDone); h.Run(hctx) }()
	defer func() { stop(); <-hostDone }()

	status := func() (state string, pid int32, captured uint64, restarts uint32) {
		for _, s := range h.Status() {
			if s.GetName() == "erp" {
				return s.GetState(), s.GetPid(), s.GetEventsCaptured(), s.GetRestarts()
			}
		}
		return "", 0, 0, 0
	}
	for kill := 1; kill <= 2; kill++ {
		var pid int32
		testutil.WaitFor(t, 30*time.Second, "the plugin running and capturing", func() bool {
			state, p, captured, _ := status()
			pid = p
			return state == pluginhost.StateRunning && captured > 0 && ob.Stats().LastSeq >= uint64(kill*600)
		})
		if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
			t.Fatalf("kill plugin %d: %v", pid, err)
		}
		if got := ob.Stats().LastSeq; got >= total {
			t.Fatalf("every row was captured (%d) before kill %d: the kill came too late to test anything; write more rows", got, kill)
		}
		testutil.WaitFor(t, 30*time.Second, "the host restarting the plugin", func() bool {
			state, p, _, restarts := status()
			return restarts >= uint32(kill) && p != pid && state == pluginhost.StateRunning
		})
	}
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	testutil.WaitFor(t, 60*time.Second, "every row in the outbox", func() bool { return ob.Stats().LastSeq >= total })

	entries, err := ob.Read(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != total {
		t.Fatalf("outbox holds %d events, want %d (none lost, none duplicated)", len(entries), total)
	}
	for i, e := range entries {
		var ev eventv1.Event
		if err := proto.Unmarshal(e.Data, &ev); err != nil {
			t.Fatal(err)
		}
		id := i + 1
		if got, want := ev.GetInventoryLevel().GetSku(), fmt.Sprintf("S%05d", id); got != want {
			t.Fatalf("event %d is %s, want %s", i, got, want)
		}
		g := (id - 1) / group
		pos := fmt.Sprintf("stock_k|s:%s|i:%d", t0.Add(time.Duration(g)*time.Millisecond).Format("2006-01-02 15:04:05.000000"), id)
		if ev.GetSource().GetPosition() != pos || ev.GetId() != canonical.ID("agent-1", "erp", pos) {
			t.Fatalf("event %d: position %q id %s, want %q", i, ev.GetSource().GetPosition(), ev.GetId(), pos)
		}
	}
}

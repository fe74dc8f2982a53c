package pgcdc

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/testkit/testsvc"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// The connector as a real plugin process under the agent's plugin host, killed with
// SIGKILL twice while transactions keep committing: the outbox ends up with every row
// exactly once, in commit order, with ids derived from the commit LSN positions, and the
// slot follows the host's acks.
func TestPluginHostSIGKILL(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{Logical: true})
	bin, sum := testutil.BuildPlugin(t, "./testdata/plugin")
	ob, err := outbox.Open(outbox.Options{Dir: filepath.Join(t.TempDir(), "outbox"), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	host, err := pluginhost.New(pluginhost.Options{AgentID: "agent-1", Outbox: ob, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		[]pluginhost.Connector{{Name: "erp", Path: bin, SHA256: sum, Settings: settings(d.pg.DSN, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hostDone := make(chan struct{})
	go func() { defer close(hostDone); host.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-hostDone; ob.Close() })
	status := func() *agentv1.ConnectorStatus { return host.Status()[0] }
	waitStreaming(t, d, "crossdock")

	// Transactions of 3 rows commit while the plugin is killed.
	const txns = 300
	writerDone := make(chan error, 1)
	go func() {
		w, err := pgxConnect(d.pg.DSN)
		if err != nil {
			writerDone <- err
			return
		}
		defer w.Close(context.Background())
		for i := range txns {
			if _, err := w.Exec(context.Background(), `INSERT INTO stock SELECT 'S' || $1::int || '-' || k, 'WH', $1::int FROM generate_series(0, 2) k`, i); err != nil {
				writerDone <- err
				return
			}
		}
		writerDone <- nil
	}()
	for kill := 1; kill <= 2; kill++ {
		var pid int32
		testutil.WaitFor(t, waitLong, "the plugin to run and capture more rows", func() bool {
			s := status()
			pid = s.GetPid()
			return s.GetState() == pluginhost.StateRunning && ob.Stats().LastSeq >= uint64(kill*150)
		})
		if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
			t.Fatalf("kill plugin %d: %v", pid, err)
		}
		if got := ob.Stats().LastSeq; got >= 3*txns {
			t.Fatalf("every row was captured (%d) before kill %d; write more", got, kill)
		}
		testutil.WaitFor(t, waitLong, "the host to restart the plugin", func() bool {
			s := status()
			return s.GetRestarts() >= uint32(kill) && s.GetPid() != pid && s.GetState() == pluginhost.StateRunning
		})
	}
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*waitLong, "every row in the outbox", func() bool { return ob.Stats().LastSeq >= 3*txns })

	es, err := ob.Read(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3*txns {
		t.Fatalf("outbox has %d events, want %d (lost or duplicated)", len(es), 3*txns)
	}
	var last Position
	for n, e := range es {
		ev := &eventv1.Event{}
		if err := proto.Unmarshal(e.Data, ev); err != nil {
			t.Fatal(err)
		}
		i, k := n/3, n%3
		if got, want := ev.GetInventoryLevel().GetSku(), fmt.Sprintf("S%d-%d", i, k); got != want {
			t.Fatalf("event %d is %s, want %s (lost, duplicated or out of order)", n, got, want)
		}
		p, err := ParsePosition(ev.GetSource().GetPosition())
		if err != nil || !p.HasOrdinal || p.Ordinal != uint64(k) || (k == 0 && p.LSN <= last.LSN) || (k > 0 && p.LSN != last.LSN) {
			t.Fatalf("event %d position %q (previous %v): %v", n, ev.GetSource().GetPosition(), last, err)
		}
		last = p
		if ev.GetId() != canonical.ID("agent-1", "erp", ev.GetSource().GetPosition()) {
			t.Fatalf("event %d id %s not derived from its position", n, ev.GetId())
		}
	}
	if s := status(); s.GetPosition() != (Position{LSN: last.LSN}).String() {
		t.Fatalf("connector position %q, want the last commit %s", s.GetPosition(), Position{LSN: last.LSN})
	}
	testutil.WaitFor(t, waitLong, "slot confirms the last commit", func() bool { return d.confirmed(t, "crossdock") >= last.LSN })
}

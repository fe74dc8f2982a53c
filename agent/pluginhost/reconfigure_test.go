package pluginhost_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// TestReconfigureRestartsOnlyChanged changes one connector's settings while two run:
// only that one restarts (new process), it resumes from its committed position (no
// event lost or repeated), the other keeps its process; a new connector starts, a
// removed one stops. A configuration a plugin refuses changes nothing.
func TestReconfigureRestartsOnlyChanged(t *testing.T) {
	bin, sum := examplePlugin(t)
	const total = 3000
	a := pluginhost.Connector{Name: "a", Path: bin, SHA256: sum,
		Settings: settings(t, map[string]any{"sku": "SKU-A", "count": total, "batch": 20, "interval": "10ms"})}
	b := pluginhost.Connector{Name: "b", Path: bin, SHA256: sum,
		Settings: settings(t, map[string]any{"sku": "SKU-B", "count": 100000, "batch": 10, "interval": "10ms"})}
	f := start(t, pluginhost.Options{}, a, b)
	testutil.WaitFor(t, 20*time.Second, "both connectors to capture", func() bool {
		return f.status("a").GetEventsCaptured() >= 200 && f.status("b").GetEventsCaptured() > 0
	})
	pidA, pidB := f.status("a").GetPid(), f.status("b").GetPid()

	// A refused configuration: the plugin says which setting, nothing changes.
	bad := a
	bad.Settings = settings(t, map[string]any{"count": total}) // no sku
	_, _, err := f.host.Reconfigure(context.Background(), []pluginhost.Connector{bad, b})
	if err == nil || !strings.Contains(err.Error(), "connectors[0].settings.sku: required") {
		t.Fatalf("Reconfigure with a refused setting: %v, want connectors[0].settings.sku: required", err)
	}
	if f.status("a").GetPid() != pidA || f.status("b").GetPid() != pidB {
		t.Fatal("a refused configuration restarted a connector")
	}

	// a changes (a faster interval), b stays, c is new.
	a2 := a
	a2.Settings = settings(t, map[string]any{"sku": "SKU-A", "count": total, "batch": 20, "interval": "1ms"})
	c := pluginhost.Connector{Name: "c", Path: bin, SHA256: sum,
		Settings: settings(t, map[string]any{"sku": "SKU-C", "count": 50, "batch": 10})}
	started, stopped, err := f.host.Reconfigure(context.Background(), []pluginhost.Connector{a2, b, c})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(started, ",") != "a,c" || strings.Join(stopped, ",") != "a" {
		t.Fatalf("started %v stopped %v, want [a c] and [a]", started, stopped)
	}
	testutil.WaitFor(t, 20*time.Second, "a to run again", func() bool {
		s := f.status("a")
		return s.GetState() == pluginhost.StateRunning && s.GetPid() != pidA
	})
	if f.status("b").GetPid() != pidB || f.status("b").GetRestarts() != 0 {
		t.Fatalf("b was restarted: %v", f.status("b"))
	}
	testutil.WaitFor(t, 60*time.Second, "every event of a and c", func() bool {
		pa, _, _ := f.ob.Position(pluginhost.PositionPrefix + "a")
		pc, _, _ := f.ob.Position(pluginhost.PositionPrefix + "c")
		return pa == "3000" && pc == "50"
	})
	evs := outboxEvents(t, f.ob)
	checkCount(t, byConnector(evs, "a"), "a", total)
	checkCount(t, byConnector(evs, "c"), "c", 50)

	// b removed: it stops and leaves the status.
	if _, stopped, err = f.host.Reconfigure(context.Background(), []pluginhost.Connector{a2, c}); err != nil || strings.Join(stopped, ",") != "b" {
		t.Fatalf("remove b: stopped %v, %v", stopped, err)
	}
	if f.status("b") != nil {
		t.Fatal("a removed connector is still in the status")
	}
}

package sampleerp

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
	"github.com/crossdock/crossdock/plugins/sdk"
	sqlconnector "github.com/crossdock/crossdock/plugins/sql"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestCaptureWhileSimulating runs the simulator while the sql connector captures the
// ERP with Settings, and checks that the captured state converges to the database's:
// every stock level, every order's status and lines, every item.
func TestCaptureWhileSimulating(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	erp, err := Open(ctx, filepath.Join(t.TempDir(), "erp.db"), 20)
	if err != nil {
		t.Fatal(err)
	}
	defer erp.Close()
	sim := NewSimulator(erp, 7)
	for i := 0; i < 200; i++ {
		if err := sim.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}

	settings := Settings(erp.DSN)
	settings["poll_interval"] = "50ms"
	raw, err := json.Marshal(settings)
	if err != nil {
		t.Fatal(err)
	}
	c := sqlconnector.New(nil)
	if err := c.Configure(ctx, raw); err != nil {
		t.Fatalf("the sample settings are refused: %v", err)
	}
	defer c.Close()

	var mu sync.Mutex
	levels := map[string]*eventv1.InventoryLevel{}
	orders := map[string]*eventv1.Order{}
	items := map[string]*eventv1.Item{}
	readDone := make(chan error, 1)
	go func() {
		readDone <- c.Read(ctx, "", func(_ context.Context, b sdk.Batch) error {
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range b.Events {
				switch p := ev.Payload.(type) {
				case *eventv1.Event_InventoryLevel:
					levels[p.InventoryLevel.Sku+"@"+p.InventoryLevel.Location] = p.InventoryLevel
				case *eventv1.Event_Order:
					orders[p.Order.OrderNumber] = p.Order
				case *eventv1.Event_Item:
					items[p.Item.Sku] = p.Item
				}
			}
			return nil
		})
	}()
	// Business goes on while capture runs.
	for i := 0; i < 300; i++ {
		if err := sim.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}

	type level struct{ onHand, allocated, available string }
	want := map[string]level{}
	rows, err := erp.DB.Query(`SELECT sku, location, on_hand, allocated FROM stock_levels`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var sku, loc string
		var onHand, alloc int
		if err := rows.Scan(&sku, &loc, &onHand, &alloc); err != nil {
			t.Fatal(err)
		}
		want[sku+"@"+loc] = level{fmt.Sprint(onHand), fmt.Sprint(alloc), fmt.Sprint(onHand - alloc)}
	}
	rows.Close()
	type order struct {
		status string
		lines  int
	}
	wantOrders := map[string]order{}
	rows, err = erp.DB.Query(`SELECT o.order_no, o.status, (SELECT COUNT(*) FROM sales_order_lines l WHERE l.order_id = o.id) FROM sales_orders o`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var no string
		var o order
		if err := rows.Scan(&no, &o.status, &o.lines); err != nil {
			t.Fatal(err)
		}
		wantOrders[no] = o
	}
	rows.Close()
	if len(want) != 60 || len(wantOrders) < 20 {
		t.Fatalf("simulation too small: %d levels, %d orders", len(want), len(wantOrders))
	}

	var why string
	testutil.WaitFor(t, 30*time.Second, "captured state equal to the ERP's", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k, w := range want {
			got := levels[k]
			if got == nil || got.OnHand != w.onHand || got.Allocated != w.allocated || got.Available != w.available || got.UnitOfMeasure != "EA" {
				why = fmt.Sprintf("level %s: captured %v, ERP %+v", k, got, w)
				return false
			}
		}
		for no, w := range wantOrders {
			got := orders[no]
			if got == nil || got.Status != w.status || len(got.Lines) != w.lines || got.Channel != "erp" {
				why = fmt.Sprintf("order %s: captured %v, ERP %+v", no, got, w)
				return false
			}
		}
		if len(items) != 20 {
			why = fmt.Sprintf("%d items captured", len(items))
			return false
		}
		return true
	})
	if t.Failed() {
		t.Log(why)
	}
	mu.Lock()
	o := orders["SO-000001"]
	mu.Unlock()
	if o.Lines[0].LineNumber != "1" || o.Lines[0].UnitPrice == "" || o.Total == "" {
		t.Fatalf("order lines not mapped: %v", o)
	}
	cancel()
	if err := <-readDone; err != nil {
		t.Fatal(err)
	}
}

func TestRunRate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "erp.db")
	erp, err := Open(ctx, path, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer erp.Close()
	sim := NewSimulator(erp, 1)
	sim.OrderEvery = 2
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx, 200) }()
	testutil.WaitFor(t, 20*time.Second, "orders created by Run", func() bool {
		var n int
		erp.DB.QueryRow(`SELECT COUNT(*) FROM sales_orders`).Scan(&n)
		return n >= 5
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Reopening keeps the data and does not seed again.
	erp.Close()
	erp2, err := Open(context.Background(), path, 99)
	if err != nil {
		t.Fatal(err)
	}
	defer erp2.Close()
	var items int
	if err := erp2.DB.QueryRow(`SELECT COUNT(*) FROM items`).Scan(&items); err != nil || items != 5 {
		t.Fatalf("items after reopen = %d (%v), want 5", items, err)
	}
	if err := sim.Run(context.Background(), 0); err == nil {
		t.Fatal("rate 0 accepted")
	}
}

package pgcdc

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/crossdock/crossdock/plugins/sdk"
)

func TestSettingsErrors(t *testing.T) {
	const dsn = "postgres://crossdock:s3cret@db.example:5432/erp"
	table := func(name, onDelete, typ string) map[string]any {
		fields := map[string]string{"sku": "sku", "location": "loc", "on_hand": "qty"}
		if typ == "price" {
			fields = map[string]string{"sku": "sku", "amount": "amount"}
		}
		return map[string]any{"name": name, "on_delete": onDelete, "mapping": map[string]any{"type": typ, "fields": fields}}
	}
	for _, tc := range []struct {
		name   string
		mod    func(m map[string]any)
		field  string
		reason string
	}{
		{"no dsn", func(m map[string]any) { delete(m, "dsn") }, "dsn", "required"},
		{"bad dsn", func(m map[string]any) { m["dsn"] = "postgres://crossdock:s3cret@db.example:notaport/erp" }, "dsn", "not a PostgreSQL connection string"},
		{"slot", func(m map[string]any) { m["slot"] = "Crossdock" }, "slot", "lower-case"},
		{"no publication", func(m map[string]any) { delete(m, "publication") }, "publication", "lower-case"},
		{"interval", func(m map[string]any) { m["status_interval"] = "soon" }, "status_interval", "not a duration"},
		{"interval range", func(m map[string]any) { m["status_interval"] = "2h" }, "status_interval", "out of range"},
		{"no tables", func(m map[string]any) { m["tables"] = []any{} }, "tables", "at least one"},
		{"table name", func(m map[string]any) { m["tables"] = []any{table("a.b.c", "", "price")} }, "tables[0].name", "schema.table"},
		{"duplicate", func(m map[string]any) {
			m["tables"] = []any{table("stock", "", "price"), table("public.stock", "", "price")}
		}, "tables[1].name", "already configured in tables[0]"},
		{"mapping", func(m map[string]any) {
			m["tables"] = []any{map[string]any{"name": "stock", "mapping": map[string]any{"type": "stock"}}}
		}, "tables[0].mapping.type", "not an event type"},
		{"on_delete", func(m map[string]any) { m["tables"] = []any{table("stock", "drop", "inventory.level")} }, "tables[0].on_delete", "not skip or zero"},
		{"zero price", func(m map[string]any) { m["tables"] = []any{table("prices", "zero", "price")} }, "tables[0].on_delete", "inventory.level mappings only"},
		{"unknown", func(m map[string]any) { m["create_slots"] = true }, "create_slots", "unknown setting"},
		{"type", func(m map[string]any) { m["create_slot"] = "yes" }, "create_slot", "want a bool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]any{"dsn": dsn, "slot": "crossdock", "publication": "crossdock",
				"tables": []any{table("stock", "zero", "inventory.level")}}
			tc.mod(m)
			raw, _ := json.Marshal(m)
			_, err := parseSettings(raw)
			var ce *sdk.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *sdk.ConfigError", err)
			}
			if ce.Field != tc.field || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("got %s: %s; want %s: ...%s...", ce.Field, ce.Reason, tc.field, tc.reason)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

func TestSettingsDefaults(t *testing.T) {
	raw := `{"dsn":"host=db.example user=crossdock dbname=erp","slot":"crossdock","publication":"crossdock",
"tables":[{"name":"inv.stock","on_delete":"zero","mapping":{"type":"inventory.level",
"fields":{"sku":"item","location":"wh","on_hand":"qty","available":"free"},"keys":{"bin":"bin"}}}]}`
	c, err := parseSettings([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if c.statusInterval != defaultStatusInterval || c.slotBusyTimeout != defaultSlotBusyTimeout {
		t.Fatalf("defaults: %s %s", c.statusInterval, c.slotBusyTimeout)
	}
	if c.conn.RuntimeParams["replication"] != "database" {
		t.Fatalf("runtime params %v", c.conn.RuntimeParams)
	}
	tb := c.tables[tableName{"inv", "stock"}]
	if tb == nil || tb.onDelete != deleteZero {
		t.Fatalf("table %+v", tb)
	}
	if got := strings.Join(tb.zeroColumns, ","); got != "qty,free" {
		t.Fatalf("zero columns %s", got)
	}
	if got := strings.Join(tb.keyColumns, ","); got != "item,wh,bin" {
		t.Fatalf("key columns %s", got)
	}
}

// FuzzParseSettings: any input gives a config or a *sdk.ConfigError, never a panic.
func FuzzParseSettings(f *testing.F) {
	f.Add(`{"dsn":"postgres://u@h/db","slot":"s","publication":"p","tables":[{"name":"t","mapping":{"type":"price","fields":{"sku":"a","amount":"b"}}}]}`)
	f.Add(`{"dsn":"host=h","slot":"s","publication":"p","status_interval":"1s","tables":[{"name":"a.t","on_delete":"zero","mapping":{"type":"inventory.level","fields":{"sku":"a","location":"b","on_hand":"c"}}}]}`)
	f.Add(`{"tables":[{"name":".x"}]}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseSettings([]byte(s))
		if err != nil {
			var ce *sdk.ConfigError
			if !errors.As(err, &ce) || ce.Field == "" {
				t.Fatalf("error %v is not a *sdk.ConfigError naming a field", err)
			}
			return
		}
		if len(c.tables) == 0 || c.conn == nil {
			t.Fatalf("accepted %q without tables or connection", s)
		}
	})
}

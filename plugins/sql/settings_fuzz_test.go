package sql

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/crossdock/crossdock/plugins/sdk"
)

// FuzzDecodeSettings: any input gives settings or a *sdk.ConfigError naming a field.
// Oracle: settings decodeSettings accepts are what encoding/json gives with unknown
// fields disallowed, and marshalling them is a fixed point (written, read and written
// again: the same bytes).
func FuzzDecodeSettings(f *testing.F) {
	f.Add([]byte(`{"driver":"sqlite","dsn":"file:erp.db","poll_interval":"2s","batch_size":100,"tables":[{"table":"stock","timestamp_column":"updated_at","key_column":"id","delay":"1s","mapping":{"type":"inventory.level","fields":{"sku":"sku","location":"loc","on_hand":"qty"}}}]}`))
	f.Add([]byte(`{"driver":"postgres","dsn":"postgres://u@h/db","sink":{"statement":"INSERT INTO t VALUES (:sku)","params":{"sku":"keys.sku"},"types":["order.created"]}}`))
	f.Add([]byte(`{"tables":[{"mapping":{"type":"price","fields":{"sku":1}}}]}`))
	f.Add([]byte(`{"tables":[{"nmae":"x"}]}`))
	f.Add([]byte(`{"poll_interval":"soon"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var s Settings
		err := decodeSettings(raw, &s)
		if err != nil {
			var ce *sdk.ConfigError
			if !errors.As(err, &ce) || ce.Field == "" || ce.Reason == "" {
				t.Fatalf("error %v is not a *sdk.ConfigError naming a field and a reason", err)
			}
			return
		}
		var want Settings
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("decodeSettings accepted %s, encoding/json with unknown fields disallowed did not: %v", raw, err)
		}
		if !reflect.DeepEqual(s, want) {
			t.Fatalf("decodeSettings(%s) = %+v; encoding/json gives %+v", raw, s, want)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal accepted settings %+v: %v", s, err)
		}
		var again Settings
		if err := decodeSettings(b, &again); err != nil {
			t.Fatalf("settings %s, marshalled from accepted input %s, refused: %v", b, raw, err)
		}
		// omitempty turns an empty list into an absent one: compare what is written.
		if b2, _ := json.Marshal(again); !bytes.Equal(b, b2) {
			t.Fatalf("round trip of %s: %s, then %s", raw, b, b2)
		}
	})
}

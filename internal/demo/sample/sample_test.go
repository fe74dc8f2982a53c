package sample

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/internal/canonical"
)

func TestInventoryIsValidAndDeterministic(t *testing.T) {
	a := NewInventory(1, DefaultWarehouses, 10, time.Unix(0, 0))
	b := NewInventory(1, DefaultWarehouses, 10, time.Unix(0, 0))
	for i := range 200 {
		ea, eb := a.Next(), b.Next()
		if !proto.Equal(ea, eb) {
			t.Fatalf("event %d differs for the same seed", i)
		}
		if err := canonical.Validate(ea); err != nil {
			t.Fatalf("event %d is invalid: %v", i, err)
		}
		Pad(ea, 256)
		if n := proto.Size(ea); n < 250 || n > 262 {
			t.Fatalf("padded event is %d bytes, want about 256", n)
		}
	}
	if n := len(a.Snapshot()); n != 30 {
		t.Fatalf("snapshot has %d events, want 30", n)
	}
}

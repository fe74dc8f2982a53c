package main

import (
	"strings"
	"testing"
)

func TestReadEventsReportsBadLines(t *testing.T) {
	in := strings.Join([]string{
		`{"inventoryLevel":{"sku":"A-1","location":"WH1","onHand":"10"}}`,
		`# a comment`,
		``,
		`{"inventoryLevel":{"sku":"A-1","location":"WH1","onHand":"ten"}}`,
		`{not json`,
		`{"type":"order","inventoryLevel":{"sku":"A-2","location":"WH1","onHand":"1"}}`,
		`{"order":{"orderNumber":"SO-1","lines":[{"sku":"A-1","quantity":"2"}]}}`,
	}, "\n")
	evs, errs := readEvents(strings.NewReader(in))
	if len(evs) != 2 {
		t.Fatalf("got %d valid events, want 2", len(evs))
	}
	if evs[0].GetType() != "inventory.level" || evs[0].GetKeys()["sku"] != "A-1" || evs[0].GetKeys()["location"] != "WH1" {
		t.Fatalf("type and keys not filled from the payload: %v", evs[0])
	}
	if len(errs) != 3 {
		t.Fatalf("got %d errors, want 3: %v", len(errs), errs)
	}
	for i, want := range []string{"line 4: invalid event: inventoryLevel.onHand", "line 5: not an event", "line 6: invalid event: type"} {
		if !strings.Contains(errs[i].Error(), want) {
			t.Errorf("error %d = %q, want it to contain %q", i, errs[i], want)
		}
	}
}

func FuzzReadEvents(f *testing.F) {
	f.Add([]byte(`{"inventoryLevel":{"sku":"A-1","location":"WH1","onHand":"10"}}`))
	f.Add([]byte(`{"order":{"orderNumber":"SO-1","lines":[{"sku":"A-1","quantity":"2"}]}}` + "\n{}"))
	f.Add([]byte("{\"keys\":{\"Bad Key\":\"x\"},\"item\":{\"sku\":\"1\"}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, errs := readEvents(strings.NewReader(string(b)))
		for _, ev := range evs {
			if ev.GetType() == "" {
				t.Fatalf("accepted an event without a type: %v", ev)
			}
		}
		for _, err := range errs {
			if !strings.HasPrefix(err.Error(), "line ") && !strings.HasPrefix(err.Error(), "read: ") {
				t.Fatalf("error without a line number: %v", err)
			}
		}
	})
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "500MiB": 500 << 20, "64KiB": 64 << 10, "1000": 1000, "2GB": 2e9} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1MiB", "1.5GiB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) succeeded, want an error", in)
		}
	}
}

package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
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

// TestPublishTimeoutOnFullOutbox fills a tiny outbox that nothing acknowledges (the
// control plane is killed) and checks that `crossdock publish --timeout` stops at its
// deadline with resource_exhausted, the reason, and how many events are durable; the
// agent still holds exactly those.
func TestPublishTimeoutOnFullOutbox(t *testing.T) {
	c := startServer(t)
	token, err := run(t, "token", "create", "--config", c.config, "--name", "full-outbox")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "agent", "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--local-addr", local,
		"--quota", "64KiB", "--enroll-token", strings.TrimSpace(token))
	controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := agentStatus(local)
		return err == nil && st.GetUplinkState() == "connected"
	})
	c.proc.kill() // nothing is acknowledged from now on

	const timeout = 3 * time.Second
	file := writeEvents(t, 2000)
	began := time.Now()
	_, err = run(t, "publish", "--file", file, "--agent", local, "--batch", "50", "--timeout", timeout.String())
	took := time.Since(began)
	if err == nil {
		t.Fatal("publish of 2000 events into a 64 KiB outbox that nothing drains succeeded")
	}
	msg := err.Error()
	t.Logf("publish error: %s", msg)
	for _, want := range []string{"resource_exhausted", "outbox quota full", "none of the 50 events of this call was written", "uplink "} {
		if !strings.Contains(msg, want) {
			t.Errorf("publish error does not say %q:\n%s", want, msg)
		}
	}
	if took < timeout-time.Second || took > timeout+3*time.Second {
		t.Errorf("publish --timeout %s returned after %s", timeout, took)
	}
	m := regexp.MustCompile(`the first (\d+) events \((\d+) calls, outbox seq 1-(\d+)\) are durable`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("publish error does not say which events are durable:\n%s", msg)
	}
	durable, _ := strconv.Atoi(m[1])
	calls, _ := strconv.Atoi(m[2])
	last, _ := strconv.Atoi(m[3])
	if durable == 0 || durable != calls*50 || last != durable {
		t.Fatalf("durable events %d, calls %d, last seq %d: inconsistent", durable, calls, last)
	}
	st, err := agentStatus(local)
	if err != nil {
		t.Fatal(err)
	}
	if ob := st.GetOutbox(); ob.GetPendingEvents() != uint64(durable) || ob.GetLastSeq() != uint64(durable) {
		t.Fatalf("agent outbox holds %d events up to seq %d; publish said %d are durable", ob.GetPendingEvents(), ob.GetLastSeq(), durable)
	}
}

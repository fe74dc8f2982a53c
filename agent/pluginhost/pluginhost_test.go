package pluginhost_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"

	"log/slog"
)

var (
	buildOnce sync.Once
	pluginBin string
	pluginSum string
	buildErr  error
)

// examplePlugin builds plugins/example once per test binary: the tests launch a real
// plugin process.
func examplePlugin(t testing.TB) (path, sum string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "crossdock-plugin-")
		if err != nil {
			buildErr = err
			return
		}
		pluginBin = filepath.Join(dir, "example")
		out, err := exec.Command("go", "build", "-o", pluginBin, "github.com/crossdock/crossdock/plugins/example").CombinedOutput()
		if err != nil {
			buildErr = err
			pluginBin = string(out)
			return
		}
		b, err := os.ReadFile(pluginBin)
		if err != nil {
			buildErr = err
			return
		}
		s := sha256.Sum256(b)
		pluginSum = hex.EncodeToString(s[:])
	})
	if buildErr != nil {
		t.Fatalf("build plugins/example: %v\n%s", buildErr, pluginBin)
	}
	return pluginBin, pluginSum
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pluginBin != "" && buildErr == nil {
		os.RemoveAll(filepath.Dir(pluginBin))
	}
	os.Exit(code)
}

type fixture struct {
	host *pluginhost.Host
	ob   *outbox.Outbox
	logs *testutil.LogBuffer
	done chan struct{}
}

func start(t *testing.T, opts pluginhost.Options, cs ...pluginhost.Connector) *fixture {
	t.Helper()
	ob, err := outbox.Open(outbox.Options{Dir: filepath.Join(t.TempDir(), "outbox"), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.LogBuffer{}
	opts.Outbox, opts.AgentID = ob, "agent-1"
	opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	h, err := pluginhost.New(opts, cs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{host: h, ob: ob, logs: logs, done: make(chan struct{})}
	go func() { defer close(f.done); h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-f.done
		ob.Close()
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return f
}

func (f *fixture) status(name string) *agentv1.ConnectorStatus {
	for _, s := range f.host.Status() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

func settings(t testing.TB, m map[string]any) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// outboxEvents decodes every pending outbox entry.
func outboxEvents(t *testing.T, ob *outbox.Outbox) []*eventv1.Event {
	t.Helper()
	es, err := ob.Read(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*eventv1.Event, len(es))
	for i, e := range es {
		out[i] = &eventv1.Event{}
		if err := proto.Unmarshal(e.Data, out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// checkCount asserts the outbox holds the counter's events 1..n exactly once, in order,
// with the ids derived from (agent, connector, position).
func checkCount(t *testing.T, evs []*eventv1.Event, connector string, n int) {
	t.Helper()
	if len(evs) != n {
		t.Errorf("outbox has %d events, want %d", len(evs), n)
	}
	for i, ev := range evs {
		want := strconv.Itoa(i + 1)
		if got := ev.GetInventoryLevel().GetOnHand(); got != want {
			t.Fatalf("event %d: on hand %s, want %s (lost or duplicated events)", i, got, want)
		}
		if id := canonical.ID("agent-1", connector, want); ev.GetId() != id || ev.GetSource().GetPosition() != want || ev.GetSource().GetConnector() != connector {
			t.Fatalf("event %d: id %s source %v, want id %s at position %s", i, ev.GetId(), ev.GetSource(), id, want)
		}
	}
}

func byConnector(evs []*eventv1.Event, name string) []*eventv1.Event {
	var out []*eventv1.Event
	for _, ev := range evs {
		if ev.GetSource().GetConnector() == name {
			out = append(out, ev)
		}
	}
	return out
}

func TestSIGKILLMidStreamLosesAndDuplicatesNothing(t *testing.T) {
	bin, sum := examplePlugin(t)
	const total = 4000
	f := start(t, pluginhost.Options{}, pluginhost.Connector{
		Name: "counter", Path: bin, SHA256: sum,
		Settings: settings(t, map[string]any{"sku": "SKU-1", "count": total, "batch": 40, "interval": "10ms"}),
	}, pluginhost.Connector{
		// A neighbour that must not notice.
		Name: "other", Path: bin, SHA256: sum,
		Settings: settings(t, map[string]any{"sku": "SKU-2", "count": 1000, "batch": 10, "interval": "5ms"}),
	})
	for kill := 1; kill <= 2; kill++ {
		var pid int32
		testutil.WaitFor(t, 20*time.Second, "the plugin to run and capture more events", func() bool {
			s := f.status("counter")
			pid = s.GetPid()
			return s.GetState() == pluginhost.StateRunning && s.GetEventsCaptured() >= uint64(kill*600)
		})
		if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
			t.Fatalf("kill plugin %d: %v", pid, err)
		}
		testutil.WaitFor(t, 20*time.Second, "the host to restart the plugin", func() bool {
			s := f.status("counter")
			return s.GetRestarts() >= uint32(kill) && s.GetPid() != pid && s.GetState() == pluginhost.StateRunning
		})
		if got := f.status("counter").GetEventsCaptured(); got >= total {
			t.Fatalf("the stream finished (%d events) before kill %d; slow it down", got, kill)
		}
	}
	testutil.WaitFor(t, 60*time.Second, "every event", func() bool { return f.ob.Stats().LastSeq >= total+1000 })
	evs := outboxEvents(t, f.ob)
	checkCount(t, byConnector(evs, "counter"), "counter", total)
	checkCount(t, byConnector(evs, "other"), "other", 1000)
	if o := f.status("other"); o.GetRestarts() != 0 || o.GetState() != pluginhost.StateRunning {
		t.Errorf("the neighbour was disturbed: %v", o)
	}
	s := f.status("counter")
	if s.GetPosition() != strconv.Itoa(total) || s.GetLastError() == "" {
		t.Errorf("status after restarts: %v", s)
	}
	if pos, _, _ := f.ob.Position(pluginhost.PositionPrefix + "counter"); pos != strconv.Itoa(total) {
		t.Errorf("committed position %q, want %d", pos, total)
	}
	// The plugin's own log lines reach the host's log, tagged with the connector.
	if logs := f.logs.String(); !strings.Contains(logs, `"msg":"counter reading"`) || !strings.Contains(logs, `"connector":"counter"`) {
		t.Errorf("plugin log lines missing from the host log:\n%s", logs)
	}
}

func TestHandshakeMismatchRefused(t *testing.T) {
	bin, sum := examplePlugin(t)
	f := start(t, pluginhost.Options{ProtocolVersion: 99}, pluginhost.Connector{
		Name: "counter", Path: bin, SHA256: sum, Settings: settings(t, map[string]any{"sku": "A"}),
	})
	testutil.WaitFor(t, 20*time.Second, "the connector to fail", func() bool { return f.status("counter").GetState() == pluginhost.StateFailed })
	s := f.status("counter")
	if e := s.GetLastError(); !strings.Contains(e, "another plugin protocol version") || !strings.Contains(e, "Plugin version: 1") {
		t.Errorf("last error %q does not explain the protocol mismatch", e)
	}
	if s.GetRestarts() != 0 || f.ob.Stats().LastSeq != 0 {
		t.Errorf("a mismatched plugin was retried or captured: %v", s)
	}
}

func TestBadChecksumRefusedBeforeLaunch(t *testing.T) {
	bin, sum := examplePlugin(t)
	bad := []byte(sum)
	bad[0] = '0' // a different digest of the right length, still hex ('f'^1 is 'g')
	if sum[0] == '0' {
		bad[0] = '1'
	}
	if bad[0] == sum[0] {
		t.Fatal("digest unchanged")
	}
	f := start(t, pluginhost.Options{}, pluginhost.Connector{
		Name: "counter", Path: bin, SHA256: string(bad), Settings: settings(t, map[string]any{"sku": "A"}),
	})
	testutil.WaitFor(t, 20*time.Second, "the connector to fail", func() bool { return f.status("counter").GetState() == pluginhost.StateFailed })
	s := f.status("counter")
	if e := s.GetLastError(); !strings.Contains(e, "does not have the configured sha256") || s.GetPid() != 0 || s.GetVersion() != "" {
		t.Errorf("status %v: want a checksum error and no launch", s)
	}
	if strings.Contains(f.logs.String(), "counter reading") {
		t.Error("the plugin ran despite the bad checksum")
	}
}

func TestConfigErrorNamesTheField(t *testing.T) {
	bin, sum := examplePlugin(t)
	f := start(t, pluginhost.Options{}, pluginhost.Connector{
		Name: "counter", Path: bin, SHA256: sum, Settings: settings(t, map[string]any{"sku": "A", "interval": "soon"}),
	})
	testutil.WaitFor(t, 20*time.Second, "the connector to fail", func() bool { return f.status("counter").GetState() == pluginhost.StateFailed })
	if e := f.status("counter").GetLastError(); e != `settings.interval: "soon" is not a duration such as "10ms"` {
		t.Errorf("last error %q", e)
	}
}

func TestInvalidEventStallsWithoutLosingAnything(t *testing.T) {
	bin, sum := examplePlugin(t)
	f := start(t, pluginhost.Options{}, pluginhost.Connector{
		Name: "counter", Path: bin, SHA256: sum,
		Settings: settings(t, map[string]any{"sku": "A", "count": 300, "batch": 100, "invalid_at": 150}),
	})
	testutil.WaitFor(t, 20*time.Second, "the connector to stall", func() bool {
		s := f.status("counter")
		return s.GetState() == pluginhost.StateStalled && s.GetRestarts() >= 2
	})
	s := f.status("counter")
	if e := s.GetLastError(); !strings.Contains(e, "invalid event at position 150") || !strings.Contains(e, "inventoryLevel.sku: required") {
		t.Errorf("last error %q does not name the position and the field", e)
	}
	// Retries back off exponentially up to the maximum (20ms doubling, at most 200ms).
	testutil.WaitFor(t, 20*time.Second, "five attempts", func() bool { return f.status("counter").GetAttempt() >= 5 })
	s = f.status("counter")
	if d := s.GetNextAttempt().AsTime().Sub(s.GetStateSince().AsTime()); d < 199*time.Millisecond || d > 201*time.Millisecond {
		t.Errorf("attempt %d waits %s, want the 200ms maximum", s.GetAttempt(), d)
	}
	// The batch before the bad one is committed; the bad batch and everything after it
	// wait, with the position before them.
	checkCount(t, outboxEvents(t, f.ob), "counter", 100)
	if s.GetPosition() != "100" {
		t.Errorf("position %q, want 100", s.GetPosition())
	}
}

func TestSinkWriteIsIdempotent(t *testing.T) {
	bin, sum := examplePlugin(t)
	sink := filepath.Join(t.TempDir(), "sink.txt")
	f := start(t, pluginhost.Options{}, pluginhost.Connector{
		Name: "erp", Path: bin, SHA256: sum, NoSource: true,
		Settings: settings(t, map[string]any{"sku": "A", "sink_file": sink}),
	})
	testutil.WaitFor(t, 20*time.Second, "the connector to run", func() bool { return f.status("erp").GetState() == pluginhost.StateRunning })
	evs := []*eventv1.Event{{Id: "ev_1"}, {Id: "ev_2"}, {}}
	for round := 0; round < 2; round++ {
		res, err := f.host.Write(context.Background(), "erp", evs)
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Ref != "line-1" || res[1].Ref != "line-2" || res[0].Err != nil || res[2].Err == nil {
			t.Fatalf("round %d: results %+v", round, res)
		}
	}
	b, _ := os.ReadFile(sink)
	if got := strings.Count(string(b), "\n"); got != 2 {
		t.Errorf("sink file has %d lines after writing twice, want 2:\n%s", got, b)
	}
	if f.ob.Stats().LastSeq != 0 {
		t.Error("a sink-only connector captured events")
	}
	if _, err := f.host.Write(context.Background(), "nope", evs); err == nil {
		t.Error("write to an unknown connector succeeded")
	}
}

func TestCheckRefusesBadSettingsAndChecksums(t *testing.T) {
	bin, sum := examplePlugin(t)
	ob, err := outbox.Open(outbox.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for _, tc := range []struct {
		c    pluginhost.Connector
		want string
	}{
		{pluginhost.Connector{Name: "ok", Path: bin, SHA256: sum, Settings: []byte(`{"sku":"A"}`)}, ""},
		{pluginhost.Connector{Name: "c", Path: bin, SHA256: sum, Settings: []byte(`{"sku":"A","batch":-1}`)}, "connectors[1].settings.batch: must be between 1 and 10000"},
		{pluginhost.Connector{Name: "c", Path: bin, SHA256: strings.Repeat("0", 64), Settings: []byte(`{}`)}, "connectors[1] (c): plugin checksum mismatch"},
		{pluginhost.Connector{Name: "c", Path: bin + ".missing", SHA256: sum, Settings: []byte(`{}`)}, "connectors[1] (c): plugin binary not found"},
	} {
		cs := []pluginhost.Connector{{Name: "first", Path: bin, SHA256: sum, Settings: []byte(`{"sku":"A"}`)}, tc.c}
		h, err := pluginhost.New(pluginhost.Options{AgentID: "a", Outbox: ob, Logger: slog.New(slog.DiscardHandler)}, cs)
		if err != nil {
			t.Fatal(err)
		}
		err = h.Check(context.Background())
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("Check(%s) = %v, want %q", tc.c.Settings, err, tc.want)
		}
	}
}

// A batch larger than one outbox transaction is appended in parts; the events arrive
// whole and in order and the position is committed with the last part.
func TestBatchLargerThanATransactionIsSplit(t *testing.T) {
	bin, sum := examplePlugin(t)
	big := outbox.MaxBatchRecords + 1500
	total := big + 100
	f := start(t, pluginhost.Options{}, pluginhost.Connector{
		Name: "counter", Path: bin, SHA256: sum,
		Settings: settings(t, map[string]any{"sku": "A", "count": total, "batch": big}),
	})
	testutil.WaitFor(t, 30*time.Second, "every event", func() bool { return f.ob.Stats().LastSeq >= uint64(total) })
	checkCount(t, outboxEvents(t, f.ob), "counter", total)
	testutil.WaitFor(t, 10*time.Second, "the last position", func() bool { return f.status("counter").GetPosition() == strconv.Itoa(total) })
	if s := f.status("counter"); s.GetRestarts() != 0 || s.GetEventsCaptured() != uint64(total) {
		t.Errorf("status %v", s)
	}
}

func TestHealthShowsInStatus(t *testing.T) {
	bin, sum := examplePlugin(t)
	f := start(t, pluginhost.Options{}, pluginhost.Connector{
		Name: "sick", Path: bin, SHA256: sum, NoSource: true,
		Settings: settings(t, map[string]any{"sku": "A", "unhealthy": "ERP database unreachable"}),
	}, pluginhost.Connector{
		Name: "well", Path: bin, SHA256: sum, NoSource: true, Settings: settings(t, map[string]any{"sku": "A"}),
	})
	testutil.WaitFor(t, 20*time.Second, "health checks", func() bool {
		return f.status("sick").GetHealthCheckedAt() != nil && f.status("well").GetHealthCheckedAt() != nil
	})
	if e := f.status("sick").GetHealthError(); e != "ERP database unreachable" {
		t.Errorf("sick connector health %q", e)
	}
	if s := f.status("well"); s.GetHealthError() != "" || s.GetState() != pluginhost.StateRunning {
		t.Errorf("well connector %v", s)
	}
}

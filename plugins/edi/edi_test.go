package edi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	"github.com/crossdock/crossdock/internal/x12"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// agentStub stands in for the agent's outbox: it keeps every committed batch and the
// last position, as pluginhost does (the binary tests in cmd/crossdock run the real
// agent). failAfter, when set, makes it "crash" right after committing a batch with
// orders: the batch is durable but the plugin is told to stop.
type agentStub struct {
	mu        sync.Mutex
	position  string
	events    []*eventv1.Event
	failAfter bool
	cancel    context.CancelFunc
}

func (a *agentStub) emit(ctx context.Context, b sdk.Batch) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if b.Position == "" {
		return errors.New("batch without position")
	}
	a.position = b.Position
	a.events = append(a.events, b.Events...)
	if a.failAfter && len(b.Events) > 0 {
		a.cancel()
		return errors.New("agent killed")
	}
	return ctx.Err()
}

// snapshot returns the last position and the order events emitted.
func (a *agentStub) snapshot() (string, []*eventv1.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var orders []*eventv1.Event
	for _, ev := range a.events {
		if ev.GetOrder() != nil {
			orders = append(orders, ev)
		}
	}
	return a.position, orders
}

// interchanges returns the edi.interchange events emitted, in order.
func (a *agentStub) interchanges() []*eventv1.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*eventv1.Event
	for _, ev := range a.events {
		if ev.GetEdiInterchange() != nil {
			out = append(out, ev)
		}
	}
	return out
}

type rig struct {
	t              *testing.T
	state, in, out string
	settings       Settings
	conn           *Connector
	stub           *agentStub
	cancel         context.CancelFunc
	done           chan error
}

const bigboxProfile = `{"partner": "bigbox", "isaQualifier": "ZZ", "isaId": "BIGBOXRETAIL", "ourQualifier": "ZZ", "ourId": "ACMEDIST",
 "version": "004010", "usage": "P", "inbound": ["850", "997"], "outbound": ["855", "856", "810", "846"], "acks": {"overdueAfter": "1h"}}`

func newRig(t *testing.T) *rig {
	root := t.TempDir()
	r := &rig{t: t, state: filepath.Join(root, "state"), in: filepath.Join(root, "in"), out: filepath.Join(root, "out")}
	raw := `{"state_dir": "` + r.state + `", "poll_interval": "20ms", "transport": {"type": "dir", "inbound": "` + r.in + `", "outbound": "` + r.out + `"},
	  "partners": [` + bigboxProfile + `]}`
	if err := json.Unmarshal([]byte(raw), &r.settings); err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs a fresh connector (a restarted plugin) from the stub's last position.
func (r *rig) start(stub *agentStub) {
	r.t.Helper()
	raw, _ := json.Marshal(r.settings)
	c := New(slog.New(slog.NewTextHandler(tlog{r.t}, nil)))
	if err := c.Configure(context.Background(), raw); err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stub.cancel = cancel
	r.conn, r.stub, r.cancel, r.done = c, stub, cancel, make(chan error, 1)
	from, _ := stub.snapshot()
	go func() { r.done <- c.Read(ctx, from, stub.emit) }()
	r.t.Cleanup(r.stop)
	testutil.WaitFor(r.t, 10*time.Second, "the source to run", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.running })
}

func (r *rig) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.conn.Close()
		r.cancel = nil
	}
}

func (r *rig) drop(name string, data []byte) {
	r.t.Helper()
	// As partners must: under a temporary name, then renamed.
	tmp := filepath.Join(r.in, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(r.in, name)); err != nil {
		r.t.Fatal(err)
	}
}

type tlog struct{ t *testing.T }

func (l tlog) Write(b []byte) (int, error) { l.t.Log(strings.TrimSpace(string(b))); return len(b), nil }

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func outFiles(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

func testdata(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join("..", "..", "internal", "edi", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDirDropOrderAndAck: a dropped 850 becomes one order event with the Crossdock
// ids, a 997 in the outbound folder (ISA13 from the committed state), the file moves
// to done/ and its original bytes are in the archive.
func TestDirDropOrderAndAck(t *testing.T) {
	r := newRig(t)
	stub := &agentStub{}
	r.start(stub)
	file := testdata(t, "850_004010_bigbox.x12")
	r.drop("po1.x12", file)
	testutil.WaitFor(t, 10*time.Second, "the file in done/", func() bool { return exists(filepath.Join(r.in, "done", "po1.x12")) })
	_, evs := stub.snapshot()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	o := evs[0].GetOrder()
	if evs[0].GetId() != canonical.OrderEventID("bigbox", "4500098765") || o.GetOrderNumber() != canonical.OrderID("bigbox", "4500098765") ||
		o.GetPartner() != "bigbox" || len(o.GetLines()) != 3 || evs[0].GetOccurredAt().AsTime().Format(time.RFC3339) != "2026-12-04T09:15:00Z" {
		t.Fatalf("order event %v", evs[0])
	}
	acks := outFiles(t, r.out)
	if len(acks) != 1 || acks[0] != "bigbox-997-000000001.x12" {
		t.Fatalf("outbound %v", acks)
	}
	b, _ := os.ReadFile(filepath.Join(r.out, acks[0]))
	ics, err := x12.ReadAll(strings.NewReader(string(b)))
	if err != nil || len(ics) != 1 || ics[0].Header.ReceiverID != "BIGBOXRETAIL" || ics[0].Header.Control != "000000001" {
		t.Fatalf("997 %s: %v", b, err)
	}
	rep, err := x12.ParseFunctionalAck(ics[0].Groups[0].Sets[0])
	if err != nil || rep.GroupControl != "4711" || rep.Status != "A" {
		t.Fatalf("997 says %+v, %v", rep, err)
	}
	j, err := ReadJournal(r.state, "bigbox")
	if err != nil || len(j) != 1 || j[0].Status != "accepted" || j[0].AckControl != "000000001" || j[0].Groups[0].Sets[0].PO != "4500098765" {
		t.Fatalf("journal %+v %v", j, err)
	}
	orig, err := os.ReadFile(filepath.Join(r.state, j[0].Archive))
	if err != nil || string(orig) != string(file) {
		t.Fatalf("archive %s: %v", j[0].Archive, err)
	}
}

// TestDirDropResentInterchange: the same sender and ISA13 in another file is a
// duplicate: no second order, no second 997, the file is rejected with the reason.
func TestDirDropResentInterchange(t *testing.T) {
	r := newRig(t)
	stub := &agentStub{}
	r.start(stub)
	file := testdata(t, "850_004010_bigbox.x12")
	r.drop("a.x12", file)
	testutil.WaitFor(t, 10*time.Second, "a.x12 done", func() bool { return exists(filepath.Join(r.in, "done", "a.x12")) })
	r.drop("b.x12", append(append([]byte(nil), file...), '\n'))
	testutil.WaitFor(t, 10*time.Second, "b.x12 rejected", func() bool { return exists(filepath.Join(r.in, "rejected", "b.x12")) })
	reason, _ := os.ReadFile(filepath.Join(r.in, "rejected", "b.x12.reason"))
	if !strings.Contains(string(reason), "interchange 000004711 from ZZ:BIGBOXRETAIL (segment 1) is a duplicate") {
		t.Fatalf("reason %q", reason)
	}
	if _, evs := stub.snapshot(); len(evs) != 1 {
		t.Fatalf("%d order events, want 1", len(evs))
	}
	if got := outFiles(t, r.out); len(got) != 1 {
		t.Fatalf("outbound %v, want one 997", got)
	}
}

// TestDirDropRestartAfterCommit: the plugin dies after the orders and state are
// committed but before the 997 is written and the file moved. The restarted plugin
// emits the same order (same id), writes the same 997 once (same control number and
// bytes) and moves the file; a new file then gets the next control number.
func TestDirDropRestartAfterCommit(t *testing.T) {
	r := newRig(t)
	stub := &agentStub{failAfter: true}
	r.start(stub)
	r.drop("po1.x12", testdata(t, "850_004010_bigbox.x12"))
	select {
	case <-r.done:
		r.cancel = nil
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin did not stop after the crash")
	}
	if exists(filepath.Join(r.in, "done", "po1.x12")) || len(outFiles(t, r.out)) != 0 {
		t.Fatal("the file moved or a 997 went out before the crash point")
	}
	stub.failAfter = false
	r.start(stub)
	testutil.WaitFor(t, 10*time.Second, "the file in done/", func() bool { return exists(filepath.Join(r.in, "done", "po1.x12")) })
	_, evs := stub.snapshot()
	if len(evs) != 2 || evs[0].GetId() != evs[1].GetId() {
		t.Fatalf("events %v: want the same order id twice (the ledger keeps one)", evs)
	}
	// The interchange's state is published twice too, identically (same id, same
	// content, so the ledger keeps one), with our 997's time as committed before.
	if ics := stub.interchanges(); len(ics) != 2 || ics[0].GetId() != ics[1].GetId() || !proto.Equal(ics[0], ics[1]) {
		t.Fatalf("edi.interchange events %v: want the same event twice", ics)
	}
	if got := outFiles(t, r.out); len(got) != 1 || got[0] != "bigbox-997-000000001.x12" {
		t.Fatalf("outbound %v", got)
	}
	second := strings.ReplaceAll(string(testdata(t, "850_004010_bigbox.x12")), "000004711", "000004712")
	r.drop("po2.x12", []byte(second))
	testutil.WaitFor(t, 10*time.Second, "po2 in done/", func() bool { return exists(filepath.Join(r.in, "done", "po2.x12")) })
	if !exists(filepath.Join(r.out, "bigbox-997-000000003.x12")) {
		t.Fatalf("outbound %v: want the second 997 at 3 (1 and 2 went to the first ISA and GS)", outFiles(t, r.out))
	}
}

// TestDirDropRefused: an unknown sender and a broken envelope go to rejected/ with the
// reason; the broken one is answered with a TA1 R.
func TestDirDropRefused(t *testing.T) {
	r := newRig(t)
	r.start(&agentStub{})
	other := strings.ReplaceAll(string(testdata(t, "850_004010_bigbox.x12")), "BIGBOXRETAIL   ", "NOBODY         ")
	r.drop("stranger.x12", []byte(other))
	broken := strings.Replace(string(testdata(t, "850_004010_bigbox.x12")), "IEA*1*", "IEA*2*", 1)
	r.drop("broken.x12", []byte(broken))
	r.drop("junk.x12", []byte("hello, not X12\n"))
	for _, n := range []string{"stranger.x12", "broken.x12", "junk.x12"} {
		testutil.WaitFor(t, 10*time.Second, n+" rejected", func() bool { return exists(filepath.Join(r.in, "rejected", n+".reason")) })
	}
	for n, want := range map[string]string{"stranger.x12": "no trading partner profile for sender ZZ:NOBODY",
		"broken.x12": "refused", "junk.x12": "not an X12 interchange"} {
		b, _ := os.ReadFile(filepath.Join(r.in, "rejected", n+".reason"))
		if !strings.Contains(string(b), want) {
			t.Errorf("%s reason %q, want %q", n, b, want)
		}
	}
	got := outFiles(t, r.out)
	if len(got) != 1 || !strings.HasPrefix(got[0], "bigbox-TA1-") {
		t.Fatalf("outbound %v, want one TA1", got)
	}
	b, _ := os.ReadFile(filepath.Join(r.out, got[0]))
	if !strings.Contains(string(b), "TA1*000004711*261204*0915*R*021") {
		t.Fatalf("TA1 %s", b)
	}
}

// TestSinkSendsAndTracksAcks: an order.ack becomes an 855 with a control number
// committed through the source's position; writing it again sends nothing new; a
// restarted plugin never reuses a number; the partner's 997 marks the group accepted
// and a group without one is overdue.
func TestSinkSendsAndTracksAcks(t *testing.T) {
	r := newRig(t)
	stub := &agentStub{}
	r.start(stub)
	ack := &eventv1.Event{Id: "order.ack:ord_1", Type: canonical.TypeOrderAck, Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{
		OrderNumber: canonical.OrderID("bigbox", "4500098765"), Partner: "bigbox", PurchaseOrderNumber: "4500098765", Status: "accepted",
		ErpOrderNumber: "SO-77", OrderDate: timestamppb.New(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC))}}}
	res, err := r.conn.Write(context.Background(), []*eventv1.Event{ack})
	if err != nil || res[0].Err != nil || res[0].Ref != "bigbox-855-000000001.x12" {
		t.Fatalf("write: %+v %v", res, err)
	}
	pos, _ := stub.snapshot()
	if st, _ := parseState(pos); st.Reserved["bigbox"] < 2 {
		t.Fatalf("position %s: the control numbers used were not committed", pos)
	}
	if res, err := r.conn.Write(context.Background(), []*eventv1.Event{ack}); err != nil || res[0].Ref != "bigbox-855-000000001.x12" || len(outFiles(t, r.out)) != 1 {
		t.Fatalf("second write: %+v %v, outbound %v", res, err, outFiles(t, r.out))
	}
	b, _ := os.ReadFile(filepath.Join(r.out, "bigbox-855-000000001.x12"))
	if !strings.Contains(string(b), "BAK*00*AK*4500098765*20261204") || !strings.Contains(string(b), "GS*PR*ACMEDIST*BIGBOXRETAIL*") {
		t.Fatalf("855:\n%s", b)
	}
	// The partner accepts our group 2 with a 997.
	r.drop("997.x12", []byte("ISA*00*          *00*          *ZZ*BIGBOXRETAIL   *ZZ*ACMEDIST       *261205*1000*U*00401*000000900*0*P*>~"+
		"GS*FA*BIGBOXRETAIL*ACMEDIST*20261205*1000*900*X*004010~ST*997*0001~AK1*PR*2~AK2*855*0001~AK5*A~AK9*A*1*1*1~SE*6*0001~GE*1*900~IEA*1*000000900~"))
	testutil.WaitFor(t, 10*time.Second, "the 997 read", func() bool { return exists(filepath.Join(r.in, "done", "997.x12")) })
	// And a TA1 rejecting our interchange 1 (an interchange of only a TA1).
	r.drop("ta1.x12", []byte("ISA*00*          *00*          *ZZ*BIGBOXRETAIL   *ZZ*ACMEDIST       *261205*1001*U*00401*000000901*0*P*>~"+
		"TA1*000000001*261205*0030*R*006~IEA*0*000000901~"))
	testutil.WaitFor(t, 10*time.Second, "the TA1 read", func() bool { return exists(filepath.Join(r.in, "done", "ta1.x12")) })
	r.stop()
	// A restarted plugin: the next 855 is above everything reserved before.
	r.start(stub)
	ship := &eventv1.Event{Id: "shipment:1", Type: canonical.TypeShipment, Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{
		ShipmentNumber: "SH-1", OrderNumber: canonical.OrderID("bigbox", "4500098765"), Partner: "bigbox", PurchaseOrderNumber: "4500098765",
		ShippedAt: timestamppb.New(time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)),
		Lines:     []*eventv1.ShipmentLine{{Sku: "SKU-001", Quantity: "24"}}}}}
	res, err = r.conn.Write(context.Background(), []*eventv1.Event{ship})
	if err != nil || res[0].Err != nil {
		t.Fatalf("856: %+v %v", res, err)
	}
	if !strings.HasPrefix(res[0].Ref, "bigbox-856-") || res[0].Ref <= "bigbox-856-000000102.x12" {
		t.Fatalf("856 %s: its control number must be above the block reserved before the restart (up to 102)", res[0].Ref)
	}
	j, err := ReadJournal(r.state, "bigbox")
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, e := range j {
		if e.Direction == "out" {
			states = append(states, e.Groups[0].Sets[0].ID+"="+e.Groups[0].AckState(time.Now().Add(2*time.Hour)))
		}
	}
	if strings.Join(states, ",") != "855=A,856=overdue" {
		t.Fatalf("ack states %v", states)
	}
	ta1 := "no interchange 000000001"
	for _, e := range j {
		if e.Direction == "out" && e.Control == "000000001" {
			ta1 = e.TA1
		}
	}
	if ta1 != "R 006" {
		t.Fatalf("TA1 of our interchange 1: %q, want R 006", ta1)
	}
	// The control plane hears of each state: the 855 sent (pending, due in the
	// profile's window), its 997 (A), the TA1; the 856 sent; the 997 and TA1 received.
	var got []string
	for _, ev := range stub.interchanges() {
		ic := ev.GetEdiInterchange()
		g := ic.GetGroups()
		line := ic.GetDirection() + ":" + normControl(ic.GetControl()) + ":" + ic.GetStatus()
		if len(g) > 0 {
			line += ":" + g[0].GetSets()[0].GetId() + "=" + g[0].GetAck()
			if ic.GetDirection() == "out" && (g[0].GetAckDue() == nil || g[0].GetSets()[0].GetOrder() != canonical.OrderID("bigbox", "4500098765") ||
				ev.GetKeys()["order"] != canonical.OrderID("bigbox", "4500098765")) {
				t.Errorf("event %v: want an ack due time and the order id in the set and the order key", ev)
			}
		}
		if ic.GetTa1() != "" {
			line += ":TA1=" + ic.GetTa1()
		}
		got = append(got, line)
	}
	want := "out:1:sent:855=,in:900:accepted:997=,out:1:sent:855=A,in:901:accepted,out:1:sent:855=A:TA1=R 006,out:103:sent:856="
	if strings.Join(got, ",") != want {
		t.Fatalf("edi.interchange events\n%s\nwant\n%s", strings.Join(got, ","), want)
	}
}

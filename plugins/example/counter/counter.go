// Package counter is the example connector of docs/connectors.md: a deterministic source
// that counts (event n is an inventory level of n units, at position n) and a sink that
// appends events to a file, idempotently by event id. Tests and benchmarks run it as a
// real plugin binary (plugins/example) and as the built-in "example".
package counter

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Settings are the connector's settings in the agent config.
type Settings struct {
	SKU      string `json:"sku"`      // required
	Location string `json:"location"` // default "main"
	Count    uint64 `json:"count"`    // stop after this many events; 0 counts forever
	Batch    int    `json:"batch"`    // events per batch; default 100
	Interval string `json:"interval"` // pause between batches, e.g. "10ms"; default none
	SinkFile string `json:"sink_file"`
	// InvalidAt makes event n invalid (no sku), and Unhealthy makes Health fail with
	// this message: to show what the agent does with them.
	InvalidAt uint64 `json:"invalid_at"`
	Unhealthy string `json:"unhealthy"`
}

// Connector is the counter.
type Connector struct {
	log      *slog.Logger
	s        Settings
	interval time.Duration
	mu       sync.Mutex // guards the sink file
}

var (
	_ sdk.Source = (*Connector)(nil)
	_ sdk.Sink   = (*Connector)(nil)
)

// New returns an unconfigured counter.
func New(log *slog.Logger) *Connector { return &Connector{log: log} }

// Spec implements sdk.Connector.
func (c *Connector) Spec() sdk.Spec {
	return sdk.Spec{Name: "example", Version: "1.0.0", Source: true, Sink: true, Description: "counts; writes events to a file"}
}

// Configure implements sdk.Connector.
func (c *Connector) Configure(_ context.Context, raw []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c.s); err != nil {
		return &sdk.ConfigError{Field: "settings", Reason: err.Error()}
	}
	if c.s.SKU == "" {
		return &sdk.ConfigError{Field: "sku", Reason: "required"}
	}
	if c.s.Location == "" {
		c.s.Location = "main"
	}
	if c.s.Batch == 0 {
		c.s.Batch = 100
	}
	if c.s.Batch < 0 || c.s.Batch > 10000 {
		return &sdk.ConfigError{Field: "batch", Reason: "must be between 1 and 10000"}
	}
	if c.s.Interval != "" {
		d, err := time.ParseDuration(c.s.Interval)
		if err != nil || d < 0 {
			return &sdk.ConfigError{Field: "interval", Reason: fmt.Sprintf("%q is not a duration such as \"10ms\"", c.s.Interval)}
		}
		c.interval = d
	}
	return nil
}

// Health implements sdk.Connector: a counter is healthy unless told otherwise.
func (c *Connector) Health(context.Context) error {
	if c.s.Unhealthy != "" {
		return errors.New(c.s.Unhealthy)
	}
	return nil
}

// Close implements sdk.Connector.
func (c *Connector) Close() error { return nil }

// Read implements sdk.Source: it emits n = from+1, from+2, ... in batches.
func (c *Connector) Read(ctx context.Context, from string, emit sdk.Emit) error {
	var n uint64
	if from != "" {
		var err error
		if n, err = strconv.ParseUint(from, 10, 64); err != nil {
			return sdk.Permanent(fmt.Errorf("counter: position %q is not a number", from))
		}
	}
	c.log.Info("counter reading", "from", n)
	for c.s.Count == 0 || n < c.s.Count {
		var b sdk.Batch
		for len(b.Events) < c.s.Batch && (c.s.Count == 0 || n < c.s.Count) {
			n++
			sku := c.s.SKU
			if n == c.s.InvalidAt {
				sku = ""
			}
			b.Events = append(b.Events, &eventv1.Event{
				Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
					Sku: sku, Location: c.s.Location, OnHand: strconv.FormatUint(n, 10)}},
			})
			b.EventPositions = append(b.EventPositions, strconv.FormatUint(n, 10))
		}
		b.Position = strconv.FormatUint(n, 10)
		if err := emit(ctx, b); err != nil {
			return err
		}
		if c.interval > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(c.interval):
			}
		}
	}
	<-ctx.Done() // caught up: a real source would wait for changes here
	return nil
}

// Ack implements sdk.Source; a counter has nobody to tell.
func (c *Connector) Ack(context.Context, string) error { return nil }

// Write implements sdk.Sink: it appends "id ref" lines to the sink file and skips ids
// already there, so writing an event twice changes nothing.
func (c *Connector) Write(_ context.Context, events []*eventv1.Event) ([]sdk.WriteResult, error) {
	if c.s.SinkFile == "" {
		return nil, sdk.Permanent(errors.New("counter: sink_file is not set"))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]string{}
	if f, err := os.Open(c.s.SinkFile); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if id, ref, ok := strings.Cut(sc.Text(), " "); ok {
				seen[id] = ref
			}
		}
		f.Close()
	}
	f, err := os.OpenFile(c.s.SinkFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("counter: open sink file: %w", err)
	}
	defer f.Close()
	out := make([]sdk.WriteResult, len(events))
	for i, ev := range events {
		out[i].EventID = ev.GetId()
		if ev.GetId() == "" {
			out[i].Err = sdk.Permanent(errors.New("event without id"))
			continue
		}
		if ref, ok := seen[ev.GetId()]; ok {
			out[i].Ref = ref
			continue
		}
		ref := fmt.Sprintf("line-%d", len(seen)+1)
		if _, err := fmt.Fprintf(f, "%s %s\n", ev.GetId(), ref); err != nil {
			return nil, fmt.Errorf("counter: write sink file: %w", err)
		}
		seen[ev.GetId()], out[i].Ref = ref, ref
	}
	return out, f.Sync()
}

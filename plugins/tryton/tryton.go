// Package tryton is the connector for the Tryton ERP (6.0, modules sale and stock) over
// its JSON-RPC API. As a source it emits absolute inventory levels per product and
// location, found by polling stock moves, sales order status changes and customer
// shipments done. As a sink it creates a sales order from an order event, quotes it so
// Tryton numbers it (and confirms it when the settings say so), and returns that number;
// the event id stored on the sale makes the write idempotent, and the Crossdock order id
// stored as the sale's reference joins the sale's later events to the order.
package tryton

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/crossdock/crossdock/plugins/sdk"
)

// Version is the connector's own version.
const Version = "0.1.0"

// Settings are the connector's settings in the agent config.
type Settings struct {
	// URL is trytond's web address, e.g. "http://erp.local:8000".
	URL string `json:"url"`
	// Database is the Tryton database name.
	Database string `json:"database"`
	// User and Password log in; the password is a secret the agent resolves.
	User     string `json:"user"`
	Password string `json:"password"`
	// Locations are the stock locations (code, or name when the location has no code)
	// whose levels the source reports. Empty means every warehouse.
	Locations []string `json:"locations"`
	// Inventory and Orders switch the two source streams; both default to true.
	Inventory *bool `json:"inventory"`
	Orders    *bool `json:"orders"`
	// PollInterval is how often the source asks Tryton for changes (default 5s).
	PollInterval string `json:"poll_interval"`
	// Lookback re-reads changes this far behind the position (default 10s), so a
	// transaction that committed late with an older write_date is not missed.
	Lookback string `json:"lookback"`
	// PageSize bounds records per call and events per batch (default 500).
	PageSize int `json:"page_size"`
	// Timeout bounds one JSON-RPC call (default 30s).
	Timeout string `json:"timeout"`
	// Shipments switches the source's stream of customer shipments done (stock.shipment.out
	// → shipment events); default true.
	Shipments *bool `json:"shipments"`

	// Confirm makes the sink confirm every sale it creates (quotation → confirmed, which
	// Tryton processes into shipments); ConfirmPartners confirms only the orders of these
	// partners (Order.partner). Without either, sales stay quotations for a person to
	// confirm.
	Confirm         bool     `json:"confirm"`
	ConfirmPartners []string `json:"confirm_partners"`
	// InvoiceMethod, when set, is the invoice method of the sales the sink creates
	// (order, shipment or manual); Tryton's sale configuration decides otherwise.
	InvoiceMethod string `json:"invoice_method"`

	pollInterval, lookback, timeout time.Duration
}

// Connector is the Tryton connector. New returns one ready for Configure.
type Connector struct {
	logger *slog.Logger
	cfg    Settings
	rpc    *client
	src    *source
}

var (
	_ sdk.Connector = (*Connector)(nil)
	_ sdk.Source    = (*Connector)(nil)
	_ sdk.Sink      = (*Connector)(nil)
)

// New returns an unconfigured connector that logs to logger (slog.Default when nil).
func New(logger *slog.Logger) *Connector {
	if logger == nil {
		logger = slog.Default()
	}
	return &Connector{logger: logger}
}

// Spec describes the connector.
func (c *Connector) Spec() sdk.Spec {
	return sdk.Spec{Name: "tryton", Version: Version, Source: true, Sink: true,
		Description: "Tryton ERP over JSON-RPC: inventory levels and sales order status out, sales orders in"}
}

// Configure checks the settings; it does not contact Tryton (Health does).
func (c *Connector) Configure(_ context.Context, settings []byte) error {
	cfg, err := parseSettings(settings)
	if err != nil {
		return err
	}
	rpc, err := newClient(cfg.URL, cfg.Database, cfg.User, cfg.Password, cfg.timeout, c.logger)
	if err != nil {
		return &sdk.ConfigError{Field: "url", Reason: err.Error()}
	}
	c.cfg, c.rpc = cfg, rpc
	c.src = newSource(c)
	return nil
}

func parseSettings(b []byte) (Settings, error) {
	var s Settings
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return s, &sdk.ConfigError{Field: ute.Field, Reason: fmt.Sprintf("want %s, got %s", ute.Type, ute.Value)}
		}
		return s, &sdk.ConfigError{Field: "settings", Reason: err.Error()}
	}
	req := func(field, v string) error {
		if v == "" {
			return &sdk.ConfigError{Field: field, Reason: "required"}
		}
		return nil
	}
	for _, e := range []error{req("url", s.URL), req("database", s.Database), req("user", s.User), req("password", s.Password)} {
		if e != nil {
			return s, e
		}
	}
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return s, &sdk.ConfigError{Field: "url", Reason: fmt.Sprintf("%q is not an http:// or https:// address", s.URL)}
	}
	for i, l := range s.Locations {
		if l == "" {
			return s, &sdk.ConfigError{Field: fmt.Sprintf("locations[%d]", i), Reason: "empty location"}
		}
	}
	t := true
	if s.Inventory == nil {
		s.Inventory = &t
	}
	if s.Orders == nil {
		s.Orders = &t
	}
	if s.Shipments == nil {
		s.Shipments = &t
	}
	for i, p := range s.ConfirmPartners {
		if p == "" {
			return s, &sdk.ConfigError{Field: fmt.Sprintf("confirm_partners[%d]", i), Reason: "empty partner name"}
		}
	}
	switch s.InvoiceMethod {
	case "", "order", "shipment", "manual":
	default:
		return s, &sdk.ConfigError{Field: "invoice_method", Reason: fmt.Sprintf("%q: want order, shipment or manual", s.InvoiceMethod)}
	}
	for _, d := range []struct {
		field, value string
		def, min     time.Duration
		out          *time.Duration
	}{
		{"poll_interval", s.PollInterval, 5 * time.Second, 10 * time.Millisecond, &s.pollInterval},
		{"lookback", s.Lookback, 10 * time.Second, 0, &s.lookback},
		{"timeout", s.Timeout, 30 * time.Second, time.Millisecond, &s.timeout},
	} {
		*d.out = d.def
		if d.value == "" {
			continue
		}
		v, err := time.ParseDuration(d.value)
		if err != nil {
			return s, &sdk.ConfigError{Field: d.field, Reason: fmt.Sprintf("%q is not a duration such as \"5s\"", d.value)}
		}
		if v < d.min {
			return s, &sdk.ConfigError{Field: d.field, Reason: fmt.Sprintf("must be at least %s", d.min)}
		}
		*d.out = v
	}
	if s.PageSize == 0 {
		s.PageSize = 500
	}
	if s.PageSize < 1 || s.PageSize > 10000 {
		return s, &sdk.ConfigError{Field: "page_size", Reason: "must be between 1 and 10000"}
	}
	return s, nil
}

// Health logs in and reads the user's preferences.
func (c *Connector) Health(ctx context.Context) error {
	if c.rpc == nil {
		return fmt.Errorf("tryton: not configured")
	}
	return c.rpc.login(ctx)
}

// Close releases idle connections.
func (c *Connector) Close() error {
	if c.rpc != nil {
		c.rpc.http.CloseIdleConnections()
	}
	return nil
}

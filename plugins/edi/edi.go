// Package edi is the EDI X12 connector: it exchanges interchanges with trading partners
// over a directory drop or SFTP, run by the agent as a connector plugin (built in as
// "edi"). As a source it polls the partner's inbound files, turns accepted 850s into
// `order` events (ids from internal/canonical/orderid.go), answers every group with a
// 997/999 (and a TA1 when asked or when the envelope is bad) over the same transport,
// and reads the partner's 997/999 for what we sent. As a sink it turns order.ack,
// shipment, invoice and inventory level events into 855, 856, 810 and 846.
//
// Exactly once: the connector's state (control numbers reserved per partner and the
// interchanges already seen, by sender and ISA13) is the source position, which the
// agent commits to its outbox in the same transaction as the orders of a file. A file
// is moved to done/ only after that commit and after its acknowledgement was written,
// so a kill at any point re-reads the file; the state then recognises its interchanges,
// regenerates the same acknowledgement (same control numbers, same time, same file
// name) and emits the same orders (same ids, which the ledger deduplicates).
// See docs/edi.md.
package edi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/crossdock/crossdock/internal/edi"
	"github.com/crossdock/crossdock/plugins/sdk"
)

// Settings are the connector's settings in the agent config.
type Settings struct {
	// StateDir holds the spool, the archive of original interchanges and the journal.
	StateDir string `json:"state_dir"`
	// PollInterval between looks at the inbound folder (default 5s).
	PollInterval string `json:"poll_interval"`
	// Retention is how long original interchanges (in and out) and journal entries are
	// kept in state_dir (default 720h, 30 days).
	Retention string `json:"retention"`
	// MaxFileBytes refuses larger inbound files (default 256 MiB).
	MaxFileBytes int64 `json:"max_file_bytes"`
	// DedupWindow is how many interchanges per partner are remembered to recognise a
	// resent one (default 1000).
	DedupWindow int               `json:"dedup_window"`
	Transport   TransportSettings `json:"transport"`
	// Partners are the trading partner profiles (the spec of TradingPartner documents).
	Partners []edi.Profile `json:"partners"`
}

// TransportSettings say where files come from and go to.
type TransportSettings struct {
	// Type is "dir" or "sftp".
	Type string `json:"type"`
	// Inbound is the folder polled for the partner's files; processed files go to its
	// done/ and rejected/ subfolders. Outbound is where ours are written.
	Inbound  string `json:"inbound"`
	Outbound string `json:"outbound"`
	// sftp: address host:port, user, password or private_key (PEM), and host_key, the
	// server's public key in authorized_keys form ("ssh-ed25519 AAAA..."), pinned.
	Address    string `json:"address"`
	User       string `json:"user"`
	Password   string `json:"password"`
	PrivateKey string `json:"private_key"`
	HostKey    string `json:"host_key"`
}

// Connector is the EDI connector.
type Connector struct {
	log       *slog.Logger
	s         Settings
	poll      time.Duration
	retention time.Duration
	byName    map[string]*edi.Profile // by Partner
	bySender  map[string]*edi.Profile // by "qual:id"
	tr        transport
	now       func() time.Time

	mu      sync.Mutex
	st      *state
	next    map[string]uint64 // next control number per partner
	running bool
	reqs    chan commitReq
}

var (
	_ sdk.Source = (*Connector)(nil)
	_ sdk.Sink   = (*Connector)(nil)
)

// New returns an unconfigured connector.
func New(log *slog.Logger) *Connector {
	return &Connector{log: log, now: time.Now, reqs: make(chan commitReq)}
}

// Spec implements sdk.Connector.
func (c *Connector) Spec() sdk.Spec {
	return sdk.Spec{Name: "edi", Version: "1.0.0", Source: true, Sink: true,
		Description: "X12 EDI with trading partners over a directory drop or SFTP: 850 in, 997/999 back, 855/856/810/846 out"}
}

// Configure implements sdk.Connector.
func (c *Connector) Configure(ctx context.Context, raw []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c.s); err != nil {
		return &sdk.ConfigError{Field: "settings", Reason: err.Error()}
	}
	s := &c.s
	if s.StateDir == "" {
		return &sdk.ConfigError{Field: "state_dir", Reason: "required: a directory for the spool, the archive and the journal"}
	}
	dur := func(field, v string, def time.Duration) (time.Duration, error) {
		if v == "" {
			return def, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, &sdk.ConfigError{Field: field, Reason: fmt.Sprintf("%q is not a positive duration such as \"5s\"", v)}
		}
		return d, nil
	}
	var err error
	if c.poll, err = dur("poll_interval", s.PollInterval, 5*time.Second); err != nil {
		return err
	}
	if c.retention, err = dur("retention", s.Retention, 30*24*time.Hour); err != nil {
		return err
	}
	if s.MaxFileBytes == 0 {
		s.MaxFileBytes = 256 << 20
	}
	if s.DedupWindow == 0 {
		s.DedupWindow = 1000
	}
	if s.DedupWindow < 1 || s.DedupWindow > 100000 {
		return &sdk.ConfigError{Field: "dedup_window", Reason: "must be between 1 and 100000"}
	}
	if len(s.Partners) == 0 {
		return &sdk.ConfigError{Field: "partners", Reason: "required: at least one trading partner profile"}
	}
	c.byName, c.bySender = map[string]*edi.Profile{}, map[string]*edi.Profile{}
	for i := range s.Partners {
		p := &s.Partners[i]
		if errs := p.Validate(fmt.Sprintf("partners[%d]", i)); len(errs) > 0 {
			return &sdk.ConfigError{Field: errs[0].Path, Reason: errs[0].Msg}
		}
		if _, dup := c.byName[p.Partner]; dup {
			return &sdk.ConfigError{Field: fmt.Sprintf("partners[%d].partner", i), Reason: fmt.Sprintf("%q has two profiles", p.Partner)}
		}
		if _, dup := c.bySender[p.SenderKey()]; dup {
			return &sdk.ConfigError{Field: fmt.Sprintf("partners[%d].isaId", i), Reason: fmt.Sprintf("%s has two profiles", p.SenderKey())}
		}
		c.byName[p.Partner], c.bySender[p.SenderKey()] = p, p
	}
	for _, d := range []string{"spool", "archive/in", "archive/out", "journal"} {
		if err := os.MkdirAll(filepath.Join(s.StateDir, d), 0o700); err != nil {
			return &sdk.ConfigError{Field: "state_dir", Reason: fmt.Sprintf("cannot create %s: %v", d, err)}
		}
	}
	c.tr, err = newTransport(ctx, &s.Transport)
	return err
}

// Health implements sdk.Connector: the transport can list the inbound folder.
func (c *Connector) Health(ctx context.Context) error {
	if c.tr == nil {
		return errors.New("edi: not configured")
	}
	_, err := c.tr.List(ctx)
	return err
}

// Close implements sdk.Connector.
func (c *Connector) Close() error {
	if c.tr != nil {
		return c.tr.Close()
	}
	return nil
}

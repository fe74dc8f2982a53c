package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/canonical"
	ediconn "github.com/crossdock/crossdock/plugins/edi"
)

// sftpServer is a real SFTP server in the test process (gliderlabs/ssh with pkg/sftp's
// server) serving root, with password login and its own host key.
func sftpServer(t *testing.T, root, user, password string) (addr, hostKey string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	srv := &ssh.Server{
		PasswordHandler: func(ctx ssh.Context, pw string) bool { return ctx.User() == user && pw == password },
		Handler:         func(s ssh.Session) { _ = s.Exit(1) },
		SubsystemHandlers: map[string]ssh.SubsystemHandler{"sftp": func(s ssh.Session) {
			server, err := sftp.NewServer(s, sftp.WithServerWorkingDirectory(root))
			if err != nil {
				return
			}
			_ = server.Serve()
			server.Close()
		}},
	}
	srv.AddHostKey(signer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), strings.TrimSpace(string(gossh.MarshalAuthorizedKey(signer.PublicKey())))
}

func filesIn(dir, prefix string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestEDIOverSFTPEndToEnd runs the control plane and an agent as processes of the built
// binary, the agent running the built-in edi connector against an SFTP server started
// by the test. An 850 placed on the partner's server is taken while the plugin is
// made to stop right after committing its orders (fault injection): the plugin is
// SIGKILLed there and the agent SIGKILLed and restarted. The interchange becomes one
// order in the ledger and one 997 on the server. Then the ERP's order.ack goes out as
// an 855 and a shipment as an 856, through a route to the connector as a sink.
func TestEDIOverSFTPEndToEnd(t *testing.T) {
	root := t.TempDir()
	sftpAddr, hostKey := sftpServer(t, root, "crossdock", "s3cret")
	c := startServer(t)
	token, err := run(t, "token", "create", "--config", c.config, "--name", "erp-east")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("E2E_ENROLL_TOKEN", strings.TrimSpace(token))
	t.Setenv("E2E_SFTP_PASSWORD", "s3cret")
	agentDir, stateDir := t.TempDir(), t.TempDir()
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	doc := fmt.Sprintf(`agent:
  data_dir: %s
  servers: [%q]
  local_addr: %q
  enroll_token: ${env:E2E_ENROLL_TOKEN}
connectors:
  - name: edi
    builtin: edi
    settings:
      state_dir: %s
      poll_interval: 100ms
      transport:
        type: sftp
        address: %q
        user: crossdock
        password: ${env:E2E_SFTP_PASSWORD}
        host_key: %q
        inbound: from-partner
        outbound: to-partner
      partners:
        - partner: bigbox
          isaQualifier: ZZ
          isaId: BIGBOXRETAIL
          ourQualifier: ZZ
          ourId: ACMEDIST
          version: "004010"
          usage: P
          inbound: ["850", "997"]
          outbound: ["855", "856"]
`, agentDir, c.addr, local, stateDir, sftpAddr, hostKey)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ediconn.FaultEnv, "pause-after-commit") // fault injection: stop after the commit
	ag := start(t, "agent", "agent", "--config", cfg)
	controlplanetest.WaitFor(t, 60*time.Second, "the edi connector to run", func() bool {
		st, err := agentStatus(local)
		return err == nil && connectorStatus(st, "edi").GetState() == "running"
	})

	in, out := filepath.Join(root, "from-partner"), filepath.Join(root, "to-partner")
	controlplanetest.WaitFor(t, 30*time.Second, "the connector to create its folders on the server", func() bool {
		_, err := os.Stat(filepath.Join(in, "done"))
		return err == nil
	})
	po, err := os.ReadFile(filepath.Join("..", "..", "internal", "edi", "testdata", "850_004010_bigbox.x12"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in, ".po1.tmp"), po, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(in, ".po1.tmp"), filepath.Join(in, "po1.x12")); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "the plugin to commit the order and stop", func() bool {
		_, err := os.Stat(filepath.Join(stateDir, "fault-paused"))
		return err == nil
	})
	st, err := agentStatus(local)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(connectorStatus(st, "edi").GetPid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ag.kill()
	if got := filesIn(out, "bigbox-997"); len(got) != 0 {
		t.Fatalf("a 997 went out before the kill point: %v", got)
	}
	os.Remove(filepath.Join(stateDir, "fault-paused"))
	t.Setenv(ediconn.FaultEnv, "")
	start(t, "agent-run2", "agent", "--config", cfg)

	controlplanetest.WaitFor(t, 60*time.Second, "the 850 in done/ on the server", func() bool {
		_, err := os.Stat(filepath.Join(in, "done", "po1.x12"))
		return err == nil
	})
	orderID := canonical.OrderEventID("bigbox", "4500098765")
	controlplanetest.WaitFor(t, 60*time.Second, "the order in the ledger", func() bool {
		for _, ce := range c.allEvents(t) {
			if ce.GetEvent().GetId() == orderID {
				return true
			}
		}
		return false
	})
	acks := filesIn(out, "bigbox-997")
	if len(acks) != 1 || acks[0] != "bigbox-997-000000001.x12" {
		t.Fatalf("997s on the server: %v, want exactly one", acks)
	}
	b, _ := os.ReadFile(filepath.Join(out, acks[0]))
	if !strings.Contains(string(b), "AK1*PO*4711") || !strings.Contains(string(b), "AK9*A*1*1*1") {
		t.Fatalf("997:\n%s", b)
	}

	// The order.ack and the shipment as the ERP side publishes them (the Crossdock order
	// number only), routed to the connector as a sink; with the trading partner's profile.
	docs := filepath.Join(t.TempDir(), "edi-route.yaml")
	if err := os.WriteFile(docs, []byte(`apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: standard}
spec: {}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: bigbox}
spec: {tier: standard, scopes: [orders:write], skus: ["*"]}
---
apiVersion: crossdock.io/v1
kind: TradingPartner
metadata: {name: bigbox-edi}
spec: {partner: bigbox, isaQualifier: ZZ, isaId: BIGBOXRETAIL, ourQualifier: ZZ, ourId: ACMEDIST, version: "004010", usage: P, inbound: ["850", "997"], outbound: ["855", "856"]}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: bigbox-edi}
spec: {type: agent, agent: erp-east, connector: edi}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: bigbox-edi-out}
spec:
  match: {types: [order.ack, shipment]}
  destination: bigbox-edi
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "apply", "-f", docs, "--config", c.config); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if out, err := run(t, "history", "tradingpartner", "bigbox-edi", "--config", c.config); err != nil || !strings.Contains(out, "1") {
		t.Fatalf("history of the TradingPartner: %v\n%s", err, out)
	}
	id := canonical.OrderID("bigbox", "4500098765")
	events := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(events, []byte(
		`{"type":"order.ack","orderAck":{"orderNumber":"`+id+`","erpOrderNumber":"SO-77","status":"accepted"}}`+"\n"+
			`{"type":"shipment","shipment":{"shipmentNumber":"SH-1","orderNumber":"`+id+`","shippedAt":"2026-12-06T08:00:00Z","lines":[{"sku":"SKU-001","quantity":"24"}]}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "publish", "--agent", local, "--file", events); err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "the 855 and the 856 on the server", func() bool {
		return len(filesIn(out, "bigbox-855")) == 1 && len(filesIn(out, "bigbox-856")) == 1
	})
	b855, _ := os.ReadFile(filepath.Join(out, filesIn(out, "bigbox-855")[0]))
	b856, _ := os.ReadFile(filepath.Join(out, filesIn(out, "bigbox-856")[0]))
	if !strings.Contains(string(b855), "BAK*00*AK*4500098765*20261204") || !strings.Contains(string(b856), "BSN*00*SH-1*20261206") || !strings.Contains(string(b856), "PRF*4500098765") {
		t.Fatalf("855:\n%s\n856:\n%s", b855, b856)
	}
	if got := filesIn(out, "bigbox-997"); len(got) != 1 {
		t.Fatalf("997s on the server at the end: %v", got)
	}
	ls, err := run(t, "edi", "ls", "--partner", "bigbox", "--state-dir", stateDir, "--po", "4500098765")
	if err != nil || !strings.Contains(ls, "997 sent A") || !strings.Contains(ls, "855 0001 PO 4500098765") || !strings.Contains(ls, "pending") {
		t.Fatalf("edi ls: %v\n%s", err, ls)
	}
	n := 0
	for _, ce := range c.allEvents(t) {
		if ce.GetEvent().GetId() == orderID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the order is %d times in the ledger", n)
	}

	// The control plane's view of the same: the connector publishes edi.interchange
	// events, every node folds them. `edi ls` without --state-dir asks it, `edi chain`
	// and `orders describe` show the order's 850 → 997 → 855 → 856 with their states.
	var central string
	controlplanetest.WaitFor(t, 30*time.Second, "the 850, our 997 and the 855 and 856 in the control plane's EDI view", func() bool {
		central, err = run(t, "edi", "chain", "4500098765", "--config", c.config)
		return err == nil && strings.Contains(central, "850") && strings.Contains(central, "997") &&
			strings.Contains(central, "855") && strings.Contains(central, "856")
	})
	if !strings.Contains(central, "pending") || !strings.Contains(central, "bigbox") {
		t.Fatalf("edi chain: the 855 and 856 should be pending their 997:\n%s", central)
	}
	if ls, err := run(t, "edi", "ls", "--partner", "bigbox", "--direction", "out", "--config", c.config); err != nil ||
		!strings.Contains(ls, "855 0001 PO 4500098765") || strings.Contains(ls, "850 ") {
		t.Fatalf("edi ls --direction out from the control plane: %v\n%s", err, ls)
	}
	if d, err := run(t, "orders", "describe", canonical.OrderID("bigbox", "4500098765"), "--config", c.config); err != nil ||
		!strings.Contains(d, "EDI:") || !strings.Contains(d, "855") {
		t.Fatalf("orders describe shows the EDI chain: %v\n%s", err, d)
	}
}

// TestEDIParseValidate: `edi parse` prints envelopes, verdicts and segments as JSON;
// `edi validate` names each verdict with its reason and exits 2 when something is
// rejected, 1 when the file is not X12.
func TestEDIParseValidate(t *testing.T) {
	td := filepath.Join("..", "..", "internal", "x12", "testdata")
	out, err := run(t, "edi", "parse", filepath.Join(td, "850_004010_retailer.x12"))
	if err != nil || !strings.Contains(out, `"status": "A"`) || !strings.Contains(out, `"BEG"`) || !strings.Contains(out, `"functionalId": "PO"`) {
		t.Fatalf("parse: %v\n%s", err, out)
	}
	out, err = run(t, "edi", "validate", "--ack", filepath.Join(td, "bad_set_among_good.x12"))
	if err == nil || !strings.Contains(err.Error(), "exit status 2") || !strings.Contains(out, "set 850 0002: rejected (R) [AK5 codes 4]") ||
		!strings.Contains(out, "partially accepted (P)") || !strings.Contains(out, "AK9*P*3*3*2") {
		t.Fatalf("validate of a bad set: %v\n%s", err, out)
	}
	out, err = run(t, "edi", "validate", filepath.Join(td, "broken_iea_count.x12"))
	if err == nil || !strings.Contains(out, "rejected (R)") || !strings.Contains(out, "TA1 note 021") {
		t.Fatalf("validate of a broken envelope: %v\n%s", err, out)
	}
	junk := filepath.Join(t.TempDir(), "junk.x12")
	if err := os.WriteFile(junk, []byte("UNA:+.? 'UNB+UNOC:3'"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "edi", "parse", junk)
	if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(out, "not an X12 interchange") {
		t.Fatalf("parse of EDIFACT: %v\n%s", err, out)
	}
	if _, err := run(t, "edi", "validate", filepath.Join(td, "850_005010_caret.x12")); err != nil {
		t.Fatalf("validate of a good 005010 file: %v", err)
	}
}

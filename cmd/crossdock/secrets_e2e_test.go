package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	"github.com/crossdock/crossdock/internal/seal"
)

// TestSecretsSealedAtRest: through the binary, a webhook secret and the CA key are
// nowhere in clear in the data dir (raft WAL, ledger, pki/), a backup or the logs, while
// the destination's URL, applied in the same document, is found in both (so the search
// sees the bytes it looks through). Delivery signs with the sealed secret. A node built
// from the backup without the key file refuses to start, naming the file; with it,
// restore works and the destination still delivers signed.
func TestSecretsSealedAtRest(t *testing.T) {
	c := startServer(t, "--webhook-allow", "127.0.0.1/32")
	keyFile := filepath.Clean(c.dataDir) + ".secrets.key"
	kr, err := seal.Load(keyFile)
	if err != nil {
		t.Fatalf("the bootstrapped node's key file: %v", err)
	}
	m, err := samplemarket.New(samplemarket.Config{Secret: e2eSecret})
	if err != nil {
		t.Fatal(err)
	}
	ms := httptest.NewServer(m)
	t.Cleanup(ms.Close)
	docs := writeFile(t, filepath.Join(t.TempDir(), "shop.yaml"), fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec:
  destination: shop
  match: {types: [inventory.level]}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": event.inventory_level.available}
`, ms.URL, e2eSecret))
	cli := func(cfg string, args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--config", cfg)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cli(c.config, "apply", "-f", docs)
	if out := cli(c.config, "apply", "-f", docs); !strings.Contains(out, "destinations/shop: unchanged (version 1)") {
		t.Fatalf("applying the same secret again is not unchanged (sealing must be deterministic):\n%s", out)
	}
	out := cli(c.config, "secrets", "status")
	mustContain(t, out, kr.ActiveID(), "yes")

	// Delivery opens the sealed secret: the marketplace checks the signature.
	token, err := run(t, "token", "create", "--config", c.config, "--name", "wh1")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "agent", "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--local-addr", local, "--enroll-token", strings.TrimSpace(token))
	controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := agentStatus(local)
		return err == nil && st.GetUplinkState() == "connected"
	})
	if _, err := run(t, "publish", "--file", writeEvents(t, 20), "--agent", local); err != nil {
		t.Fatal(err)
	}
	signed := func(m *samplemarket.Market, n int) {
		t.Helper()
		controlplanetest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d signed deliveries", n), func() bool {
			ok := 0
			for _, r := range m.Requests() {
				if r.SignatureOK {
					ok++
				}
			}
			return ok >= n
		})
		for _, r := range m.Requests() {
			if !r.SignatureOK {
				t.Fatalf("request %s: bad signature", r.ID)
			}
		}
	}
	signed(m, 1)

	backup := filepath.Join(t.TempDir(), "backup.snap")
	cli(c.config, "snapshot", "save", backup)

	caKey := openCAKey(t, kr, c.dataDir)
	secretBody := strings.TrimPrefix(e2eSecret, "whsec_")
	rawSecret, err := base64.StdEncoding.DecodeString(secretBody)
	if err != nil {
		t.Fatal(err)
	}
	needles := map[string][]byte{"webhook secret": []byte(secretBody), "webhook secret bytes": rawSecret, "CA key": caKey}
	places := []string{c.dataDir, backup, c.proc.log}
	for _, p := range places {
		for what, n := range needles {
			if f := findBytes(t, p, n); f != "" {
				t.Errorf("the %s is in clear in %s", what, f)
			}
		}
	}
	if findBytes(t, c.dataDir, []byte(ms.URL)) == "" || findBytes(t, backup, []byte(ms.URL)) == "" {
		t.Fatal("the destination URL is not found in the data dir or the backup either: the search proves nothing")
	}
	// Raft, ledger and the CA key are the owner's only (pki/ca.crt is public).
	for _, p := range []string{"raft", "ledger", filepath.Join("pki", "ca.key")} {
		checkPrivate(t, filepath.Join(c.dataDir, p))
	}

	// A new first node built from the backup: old pki/ without the key file is refused.
	c.proc.kill()
	dir := filepath.Join(t.TempDir(), "rebuilt")
	if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "ca.key"} {
		b, err := os.ReadFile(filepath.Join(c.dataDir, "pki", f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "pki", f), string(b))
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"server", "--data-dir", dir, "--node-id", "cp1", "--listen", addr, "--raft-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--write-cli-config=false", "--metrics-listen", "", "--webhook-allow", "127.0.0.1/32"}
	out, err = run(t, args...)
	if err == nil {
		t.Fatalf("a node with a sealed pki/ and no key file started:\n%s", out)
	}
	mustContain(t, err.Error(), "holds a cluster CA, sealed under that cluster's secrets key, and there is no key file at "+dir+".secrets.key")

	// With the key file: it starts with the old CA, the restore is accepted, the
	// destination delivers signed again.
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+".secrets.key", string(b))
	start(t, "rebuilt", args...)
	cfg := filepath.Join(dir, "admin.yaml")
	controlplanetest.WaitFor(t, 60*time.Second, "rebuilt node's admin.yaml", func() bool { _, err := os.Stat(cfg); return err == nil })
	controlplanetest.WaitFor(t, 30*time.Second, "rebuilt node's API", func() bool { _, err := run(t, "cluster", "peers", "--config", cfg); return err == nil })
	cli(cfg, "snapshot", "restore", backup)
	// The restored state has the old admin token back: the old admin.yaml, at the new address.
	oldCfg := writeFile(t, filepath.Join(t.TempDir(), "admin.yaml"), strings.Replace(mustRead(t, c.config), c.addr, addr, -1))
	mustContain(t, cli(oldCfg, "secrets", "status"), kr.ActiveID())
	before := len(m.Requests())
	ev := writeFile(t, filepath.Join(t.TempDir(), "one.jsonl"), `{"id":"after-restore-1","type":"inventory.level","keys":{"sku":"R-1"},"inventoryLevel":{"sku":"R-1","location":"WH1","onHand":"5","available":"5"}}`+"\n")
	tok2 := cli(oldCfg, "token", "create", "--name", "wh2")
	local2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "agent2", "agent", "--data-dir", t.TempDir(), "--server", addr, "--local-addr", local2, "--enroll-token", strings.TrimSpace(tok2))
	controlplanetest.WaitFor(t, 30*time.Second, "agent 2 connected", func() bool {
		st, err := agentStatus(local2)
		return err == nil && st.GetUplinkState() == "connected"
	})
	if _, err := run(t, "publish", "--file", ev, "--agent", local2); err != nil {
		t.Fatal(err)
	}
	signed(m, before+1)
}

// openCAKey opens the node's sealed pki/ca.key and returns the base64 body of the PEM
// (what a search for the key in clear looks for).
func openCAKey(t *testing.T, kr *seal.Keyring, dataDir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "pki", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !seal.IsSealed(string(b)) {
		t.Fatalf("pki/ca.key is not sealed: %.40q", b)
	}
	plain, err := kr.Open(seal.PurposeCAKey, string(b))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(plain)), "\n")
	if len(lines) < 3 {
		t.Fatalf("CA key PEM has %d lines", len(lines))
	}
	return []byte(lines[1]) // the first line of base64 after the BEGIN line
}

// findBytes returns the first file under root (a file or a directory) holding needle.
func findBytes(t *testing.T, root string, needle []byte) string {
	t.Helper()
	found := ""
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		// Ledger snapshots (raft's state.bin, `snapshot save` files) are compressed:
		// search what they hold.
		if z, ok := bytes.CutPrefix(b, []byte("CDXSNAPZ")); ok {
			d, err := zstd.NewReader(nil)
			if err != nil {
				return err
			}
			defer d.Close()
			if b, err = d.DecodeAll(z, nil); err != nil {
				return fmt.Errorf("decompress snapshot %s: %w", p, err)
			}
		}
		if bytes.Contains(b, needle) {
			found = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// checkPrivate fails for any file under dir that others may read.
func checkPrivate(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v: readable by others", p, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSecretsKeyRotation: a new key put first in the key file seals from the next start;
// `secrets reseal` moves the stored secrets and the CA key under it; after that the old
// key leaves the file and the node still starts and signs deliveries.
func TestSecretsKeyRotation(t *testing.T) {
	c := startServer(t, "--webhook-allow", "127.0.0.1/32")
	keyFile := filepath.Clean(c.dataDir) + ".secrets.key"
	oldText := mustRead(t, keyFile)
	oldKR, err := seal.Parse([]byte(oldText))
	if err != nil {
		t.Fatal(err)
	}
	m, err := samplemarket.New(samplemarket.Config{Secret: e2eSecret})
	if err != nil {
		t.Fatal(err)
	}
	ms := httptest.NewServer(m)
	t.Cleanup(ms.Close)
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--config", c.config)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cli("apply", "-f", writeFile(t, filepath.Join(t.TempDir(), "shop.yaml"), fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec: {destination: shop, match: {types: [inventory.level]}}
`, ms.URL, e2eSecret)))

	newLine := strings.TrimSpace(cli("secrets", "keygen"))
	newID := strings.Fields(newLine)[0]
	c.proc.kill()
	writeFile(t, keyFile, newLine+"\n"+oldText)
	c.restart(t)
	out := cli("secrets", "status")
	mustContain(t, out, "keys:  "+newID+", "+oldKR.ActiveID())
	if !strings.Contains(out, oldKR.ActiveID()+"  yes   1") {
		t.Fatalf("before reseal the destination is not under the old key:\n%s", out)
	}
	out = cli("secrets", "reseal")
	mustContain(t, out, "sealed under key "+newID+": 1 destination secret(s) (shop), CA key re-sealed")
	out = cli("secrets", "status")
	if !strings.Contains(out, newID+"  yes   1             yes") || strings.Contains(out, oldKR.ActiveID()+"  yes") {
		t.Fatalf("after reseal everything is not under the new key:\n%s", out)
	}
	mustContain(t, cli("secrets", "reseal"), ": 0 destination secret(s), CA key already sealed under it")

	// The old key leaves the file: the node starts (pki/ca.key was re-sealed at the
	// previous start) and signs with the re-sealed secret.
	c.proc.kill()
	writeFile(t, keyFile, newLine+"\n")
	c.restart(t)
	token := cli("token", "create", "--name", "rot1")
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "agent", "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--local-addr", local, "--enroll-token", strings.TrimSpace(token))
	controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := agentStatus(local)
		return err == nil && st.GetUplinkState() == "connected"
	})
	if _, err := run(t, "publish", "--file", writeEvents(t, 5), "--agent", local); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "a signed delivery after the rotation", func() bool {
		for _, r := range m.Requests() {
			if r.SignatureOK {
				return true
			}
		}
		return false
	})
	for _, r := range m.Requests() {
		if !r.SignatureOK {
			t.Fatalf("request %s: bad signature", r.ID)
		}
	}
}

package edi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
	"github.com/crossdock/crossdock/plugins/sdk"
)

// transport moves files to and from a partner. Names are base names in the inbound
// and outbound folders.
type transport interface {
	// List returns the inbound files waiting, oldest name first (temporary files,
	// dot files and the done/ and rejected/ folders are skipped).
	List(ctx context.Context) ([]string, error)
	// Fetch copies an inbound file to w, up to max bytes (more is an error).
	Fetch(ctx context.Context, name string, w io.Writer, max int64) error
	// Put writes an outbound file atomically: a reader never sees part of it.
	Put(ctx context.Context, name string, data []byte) error
	// Finish moves an inbound file to done/ or, with a reason, to rejected/ with the
	// reason in NAME.reason next to it.
	Finish(ctx context.Context, name string, reason string) error
	Close() error
}

func newTransport(ctx context.Context, s *TransportSettings) (transport, error) {
	if s.Inbound == "" {
		return nil, &sdk.ConfigError{Field: "transport.inbound", Reason: "required: the folder the partner's files arrive in"}
	}
	if s.Outbound == "" {
		return nil, &sdk.ConfigError{Field: "transport.outbound", Reason: "required: the folder our files are written to"}
	}
	switch s.Type {
	case "dir":
		for _, d := range []string{s.Inbound, filepath.Join(s.Inbound, "done"), filepath.Join(s.Inbound, "rejected"), s.Outbound} {
			if err := os.MkdirAll(d, 0o750); err != nil {
				return nil, &sdk.ConfigError{Field: "transport", Reason: fmt.Sprintf("cannot create %s: %v", d, err)}
			}
		}
		return &dirTransport{in: s.Inbound, out: s.Outbound}, nil
	case "sftp":
		return newSFTP(ctx, s)
	}
	return nil, &sdk.ConfigError{Field: "transport.type", Reason: fmt.Sprintf("%q must be dir or sftp", s.Type)}
}

// skipName reports whether an inbound name is not a partner's finished file.
func skipName(n string) bool {
	return strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".tmp") || strings.HasSuffix(n, ".part") || strings.HasSuffix(n, ".reason")
}

type dirTransport struct{ in, out string }

func (d *dirTransport) List(context.Context) ([]string, error) {
	ents, err := os.ReadDir(d.in)
	if err != nil {
		return nil, fmt.Errorf("edi: list inbound folder %s: %w", d.in, err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && !skipName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

func (d *dirTransport) Fetch(_ context.Context, name string, w io.Writer, max int64) error {
	f, err := os.Open(filepath.Join(d.in, name))
	if err != nil {
		return fmt.Errorf("edi: open inbound file: %w", err)
	}
	defer f.Close()
	return copyMax(w, f, max, name)
}

func copyMax(w io.Writer, r io.Reader, max int64, name string) error {
	n, err := io.Copy(w, io.LimitReader(r, max+1))
	if err != nil {
		return fmt.Errorf("edi: read %s: %w", name, err)
	}
	if n > max {
		return sdk.Permanent(fmt.Errorf("edi: %s is larger than max_file_bytes (%d)", name, max))
	}
	return nil
}

func (d *dirTransport) Put(_ context.Context, name string, data []byte) error {
	if err := fsutil.WriteFileAtomic(d.out, name, data, 0o640); err != nil {
		return fmt.Errorf("edi: write outbound file %s: %w", name, err)
	}
	return nil
}

func (d *dirTransport) Finish(_ context.Context, name, reason string) error {
	sub := "done"
	if reason != "" {
		sub = "rejected"
		if err := fsutil.WriteFileAtomic(filepath.Join(d.in, sub), name+".reason", []byte(reason+"\n"), 0o640); err != nil {
			return fmt.Errorf("edi: write reason file: %w", err)
		}
	}
	if err := os.Rename(filepath.Join(d.in, name), filepath.Join(d.in, sub, name)); err != nil {
		return fmt.Errorf("edi: move %s to %s/: %w", name, sub, err)
	}
	return fsutil.SyncDir(d.in)
}

func (d *dirTransport) Close() error { return nil }

// sftpTransport polls a partner's SFTP server. It reconnects on the next call after
// the connection breaks.
type sftpTransport struct {
	s      *TransportSettings
	config *ssh.ClientConfig

	mu     sync.Mutex
	conn   *ssh.Client
	client *sftp.Client
}

func newSFTP(_ context.Context, s *TransportSettings) (*sftpTransport, error) {
	if s.Address == "" {
		return nil, &sdk.ConfigError{Field: "transport.address", Reason: "required: host:port of the partner's SFTP server"}
	}
	if s.User == "" {
		return nil, &sdk.ConfigError{Field: "transport.user", Reason: "required"}
	}
	if s.HostKey == "" {
		return nil, &sdk.ConfigError{Field: "transport.host_key", Reason: "required: the server's public key (\"ssh-ed25519 AAAA...\", from ssh-keyscan), which is pinned"}
	}
	hk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s.HostKey))
	if err != nil {
		return nil, &sdk.ConfigError{Field: "transport.host_key", Reason: fmt.Sprintf("not a public key in authorized_keys form: %v", err)}
	}
	var auth []ssh.AuthMethod
	if s.PrivateKey != "" {
		signer, err := ssh.ParsePrivateKey([]byte(s.PrivateKey))
		if err != nil {
			return nil, &sdk.ConfigError{Field: "transport.private_key", Reason: fmt.Sprintf("not a PEM private key: %v", err)}
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if s.Password != "" {
		auth = append(auth, ssh.Password(s.Password))
	}
	if len(auth) == 0 {
		return nil, &sdk.ConfigError{Field: "transport.password", Reason: "set password or private_key"}
	}
	return &sftpTransport{s: s, config: &ssh.ClientConfig{User: s.User, Auth: auth, HostKeyCallback: ssh.FixedHostKey(hk), Timeout: 15 * time.Second}}, nil
}

func (t *sftpTransport) get(ctx context.Context) (*sftp.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		if _, err := t.client.Getwd(); err == nil {
			return t.client, nil
		}
		t.client.Close()
		t.conn.Close()
		t.client, t.conn = nil, nil
	}
	d := net.Dialer{Timeout: t.config.Timeout}
	nc, err := d.DialContext(ctx, "tcp", t.s.Address)
	if err != nil {
		return nil, fmt.Errorf("edi: connect to SFTP server %s: %w", t.s.Address, err)
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, t.s.Address, t.config)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("edi: SSH handshake with %s (is host_key the server's key?): %w", t.s.Address, err)
	}
	conn := ssh.NewClient(cc, chans, reqs)
	client, err := sftp.NewClient(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("edi: start SFTP on %s: %w", t.s.Address, err)
	}
	for _, d := range []string{path.Join(t.s.Inbound, "done"), path.Join(t.s.Inbound, "rejected"), t.s.Outbound} {
		if err := client.MkdirAll(d); err != nil {
			client.Close()
			conn.Close()
			return nil, fmt.Errorf("edi: create %s on the SFTP server: %w", d, err)
		}
	}
	t.conn, t.client = conn, client
	return client, nil
}

func (t *sftpTransport) List(ctx context.Context) ([]string, error) {
	c, err := t.get(ctx)
	if err != nil {
		return nil, err
	}
	ents, err := c.ReadDir(t.s.Inbound)
	if err != nil {
		return nil, fmt.Errorf("edi: list %s on the SFTP server: %w", t.s.Inbound, err)
	}
	var out []string
	for _, e := range ents {
		if e.Mode().IsRegular() && !skipName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

func (t *sftpTransport) Fetch(ctx context.Context, name string, w io.Writer, max int64) error {
	c, err := t.get(ctx)
	if err != nil {
		return err
	}
	f, err := c.Open(path.Join(t.s.Inbound, name))
	if err != nil {
		return fmt.Errorf("edi: open %s on the SFTP server: %w", name, err)
	}
	defer f.Close()
	return copyMax(w, f, max, name)
}

func (t *sftpTransport) Put(ctx context.Context, name string, data []byte) error {
	c, err := t.get(ctx)
	if err != nil {
		return err
	}
	final := path.Join(t.s.Outbound, name)
	tmp := path.Join(t.s.Outbound, "."+name+".tmp")
	f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("edi: create %s on the SFTP server: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("edi: upload %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("edi: upload %s: %w", name, err)
	}
	// PosixRename replaces an existing file (a rewrite after a crash); servers without
	// the extension get a remove and a rename.
	if err := c.PosixRename(tmp, final); err != nil {
		_ = c.Remove(final)
		if err2 := c.Rename(tmp, final); err2 != nil {
			return fmt.Errorf("edi: rename %s to %s on the SFTP server: %w", tmp, final, errors.Join(err, err2))
		}
	}
	return nil
}

func (t *sftpTransport) Finish(ctx context.Context, name, reason string) error {
	c, err := t.get(ctx)
	if err != nil {
		return err
	}
	sub := "done"
	if reason != "" {
		sub = "rejected"
		f, err := c.OpenFile(path.Join(t.s.Inbound, sub, name+".reason"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err != nil {
			return fmt.Errorf("edi: write reason file: %w", err)
		}
		_, err = f.Write([]byte(reason + "\n"))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("edi: write reason file: %w", err)
		}
	}
	from, to := path.Join(t.s.Inbound, name), path.Join(t.s.Inbound, sub, name)
	if err := c.PosixRename(from, to); err != nil {
		_ = c.Remove(to)
		if err2 := c.Rename(from, to); err2 != nil {
			return fmt.Errorf("edi: move %s to %s/ on the SFTP server: %w", name, sub, errors.Join(err, err2))
		}
	}
	return nil
}

func (t *sftpTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		t.client.Close()
		t.conn.Close()
		t.client, t.conn = nil, nil
	}
	return nil
}

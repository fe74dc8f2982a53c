package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
	"github.com/crossdock/crossdock/internal/seal"
)

// secretsKeyPath is the node's key file: Config.SecretsKey, or "<data-dir>.secrets.key"
// beside the data dir.
func (s *Server) secretsKeyPath() string {
	if s.cfg.SecretsKey != "" {
		return s.cfg.SecretsKey
	}
	return filepath.Clean(s.cfg.DataDir) + ".secrets.key"
}

// loadSecretsKey loads the node's secrets key. A new node bootstrapping a cluster
// creates it; a new node joining one gets the cluster's keys in the join answer (nil
// here, set by loadOrCreateCA); any other start needs the file, since what the node
// stores is sealed under it.
func (s *Server) loadSecretsKey(ident *NodeIdentity) (*seal.Keyring, error) {
	path := s.secretsKeyPath()
	if inside(s.cfg.DataDir, path) {
		return nil, fmt.Errorf("controlplane: --secrets-key %s is inside the data dir %s: keep it apart, or every copy of the data dir carries its own key", path, s.cfg.DataDir)
	}
	kr, err := seal.Load(path)
	switch {
	case err == nil:
		s.logger.Info("secrets key loaded", "path", path, "sealing_key", kr.ActiveID(), "keys", len(kr.IDs()))
		return kr, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("controlplane: %w", err)
	case ident != nil:
		return nil, fmt.Errorf("controlplane: the secrets key file %s is missing, and this node's data (%s) is sealed under it: "+
			"copy the cluster's key file there (every node has the same one; see docs/operations.md, \"Secrets at rest\"), or name it with --secrets-key", path, s.cfg.DataDir)
	case len(s.cfg.Join) > 0:
		return nil, nil // the join answer carries the cluster's keys
	case s.cfg.Bootstrap:
		if _, err := os.Stat(filepath.Join(s.cfg.DataDir, pkiDir, caName+".key")); err == nil {
			return nil, fmt.Errorf("controlplane: %s holds a cluster CA, sealed under that cluster's secrets key, and there is no key file at %s: "+
				"copy the cluster's key file there (or name it with --secrets-key) together with pki/", filepath.Join(s.cfg.DataDir, pkiDir), path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("controlplane: secrets key dir: %w", err)
		}
		kr, err := seal.Create(path)
		if err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		s.logger.Info("created the cluster's secrets key: back it up apart from the data dir; without it the stored secrets and snapshots cannot be opened", "path", path, "sealing_key", kr.ActiveID())
		return kr, nil
	default:
		return nil, nil // loadOrCreateCA says what is missing
	}
}

// adoptJoinKeys stores the keys a joining node got from the cluster. An existing key
// file must already hold the cluster's sealing key.
func (s *Server) adoptJoinKeys(text []byte) error {
	if len(text) == 0 {
		return errors.New("controlplane: the cluster sent no secrets key: it runs an older build; upgrade it before adding nodes")
	}
	theirs, err := seal.Parse(text)
	if err != nil {
		return fmt.Errorf("controlplane: the cluster's secrets key: %w", err)
	}
	path := s.secretsKeyPath()
	if s.keys != nil {
		for _, id := range s.keys.IDs() {
			if id == theirs.ActiveID() {
				return nil
			}
		}
		return fmt.Errorf("controlplane: the secrets key file %s lacks the cluster's sealing key %s: remove it to take the cluster's keys, or put that key in it", path, theirs.ActiveID())
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("controlplane: secrets key dir: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Dir(path), filepath.Base(path), text, 0o600); err != nil {
		return fmt.Errorf("controlplane: store the cluster's secrets key: %w", err)
	}
	s.keys = theirs
	s.logger.Info("stored the cluster's secrets key", "path", path, "sealing_key", theirs.ActiveID())
	return nil
}

// inside reports whether path is dir or below it.
func inside(dir, path string) bool {
	d, err1 := filepath.Abs(dir)
	p, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// openCAKey opens a sealed CA key; a key stored in clear (an older build) is returned
// as it is.
func (s *Server) openCAKey(keyPEM []byte) ([]byte, error) {
	if !seal.IsSealed(string(keyPEM)) {
		return keyPEM, nil
	}
	if s.keys == nil {
		return nil, fmt.Errorf("the CA key is sealed and there is no secrets key file at %s", s.secretsKeyPath())
	}
	plain, err := s.keys.Open(seal.PurposeCAKey, string(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("open the CA key with %s: %w", s.secretsKeyPath(), err)
	}
	return plain, nil
}

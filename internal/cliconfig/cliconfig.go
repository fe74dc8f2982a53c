// Package cliconfig reads and writes the CLI's config file: the control plane address,
// the admin token and the cluster CA. The control plane writes one at bootstrap.
package cliconfig

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
)

// Config is the CLI's view of one cluster.
type Config struct {
	// Addr is a control plane address, host:port.
	Addr string `json:"addr"`
	// Token is an admin bearer token.
	Token string `json:"token"`
	// CAPEM is the cluster CA certificate that server certificates are checked against.
	CAPEM string `json:"ca_pem"`
}

// EnvPath names the environment variable that points at a config file.
const EnvPath = "CROSSDOCK_CONFIG"

// DefaultPath is $CROSSDOCK_CONFIG, else ~/.config/crossdock/config.yaml.
func DefaultPath() string {
	if p := os.Getenv(EnvPath); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "crossdock", "config.yaml")
}

// Load reads a config file. A missing file is reported with os.ErrNotExist.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CLI config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("parse CLI config %s: %w", path, err)
	}
	return &c, nil
}

// Write stores c at path with mode 0600, atomically and durably.
func Write(path string, c *Config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode CLI config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write CLI config: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Dir(path), filepath.Base(path), b, 0o600); err != nil {
		return fmt.Errorf("write CLI config: %w", err)
	}
	return nil
}

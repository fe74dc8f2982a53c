// Package cliconfig reads and writes the CLI's config file: the control plane
// addresses, the admin token and the cluster CA. The control plane writes one at
// bootstrap; `crossdock cluster peers` adds the nodes that joined since.
package cliconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
)

// Config is the CLI's view of one cluster.
type Config struct {
	// Addr is a control plane address, host:port: the node tried first.
	Addr string `json:"addr"`
	// Addrs are the API addresses of the cluster's other nodes, tried in turn when a
	// node cannot be reached (`crossdock cluster peers` keeps the list current).
	Addrs []string `json:"addrs,omitempty"`
	// Token is an admin bearer token.
	Token string `json:"token"`
	// CAPEM is the cluster CA certificate that server certificates are checked against.
	CAPEM string `json:"ca_pem"`
	// ClusterID is the id of the cluster the config was written for (a hash of its CA;
	// `crossdock cluster peers` shows the cluster's).
	ClusterID string `json:"cluster_id,omitempty"`

	// Path is the file the config was loaded from ("" when it came from flags and
	// environment only); it is named in connection errors.
	Path string `json:"-"`
}

// Servers returns every address to try, Addr first, without duplicates.
func (c *Config) Servers() []string {
	var out []string
	for _, a := range append([]string{c.Addr}, c.Addrs...) {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// EnvPath names the environment variable that points at a config file.
const EnvPath = "CROSSDOCK_CONFIG"

// DefaultPath is $CROSSDOCK_CONFIG, else ~/.config/crossdock/config.yaml.
func DefaultPath() string {
	if p := os.Getenv(EnvPath); p != "" {
		return p
	}
	return UserPath()
}

// UserPath is ~/.config/crossdock/config.yaml (the user's config directory), or "".
func UserPath() string {
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
	c.Path = path
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

package config_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/crossdock/crossdock/agent/config"
	"github.com/crossdock/crossdock/plugins/builtin"
)

// The example in deploy/ stays a config the agent accepts, and each connector accepts
// its settings (the databases it names are unreachable here, which Configure allows:
// it checks columns once it can connect).
func TestDeployExample(t *testing.T) {
	b, err := os.ReadFile("../../deploy/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := config.Env{
		LookupEnv: func(k string) (string, bool) { return "value-of-" + k, true },
		ReadFile:  func(string) ([]byte, error) { return []byte("secret\n"), nil },
	}
	f, err := config.Parse(b, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Connectors) != 2 {
		t.Fatalf("%d connectors", len(f.Connectors))
	}
	for _, c := range f.Connectors {
		if c.Name == "tryton" {
			continue // its Configure logs in; the settings are checked by the tryton tests' shape
		}
		newConn, ok := builtin.Lookup(c.Builtin)
		if !ok {
			t.Fatalf("connector %s: unknown builtin %q", c.Name, c.Builtin)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := newConn(slog.New(slog.DiscardHandler)).Configure(ctx, c.Settings)
		cancel()
		if err != nil {
			t.Errorf("connector %s: %v", c.Name, err)
		}
	}
}

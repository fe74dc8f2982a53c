// Package builtin lists the connectors compiled into the crossdock binary. The agent
// runs each one as a subprocess of its own executable (`crossdock plugin <name>`), over
// the same go-plugin protocol as a third-party plugin binary.
package builtin

import (
	"log/slog"
	"sort"

	edi "github.com/crossdock/crossdock/plugins/edi"
	"github.com/crossdock/crossdock/plugins/example/counter"
	"github.com/crossdock/crossdock/plugins/pgcdc"
	"github.com/crossdock/crossdock/plugins/sdk"
	sqlconnector "github.com/crossdock/crossdock/plugins/sql"
	"github.com/crossdock/crossdock/plugins/tryton"
)

// Constructor makes a connector; logger is the plugin process's logger (sdk.Logger).
type Constructor func(logger *slog.Logger) sdk.Connector

// connectors maps a connector type (the `builtin:` value in the agent config) to its
// constructor. Add one line per built-in connector.
var connectors = map[string]Constructor{
	"sql":    func(l *slog.Logger) sdk.Connector { return sqlconnector.New(l) },
	"pgcdc":  func(l *slog.Logger) sdk.Connector { return pgcdc.New(l) },
	"tryton": func(l *slog.Logger) sdk.Connector { return tryton.New(l) },
	"edi":    func(l *slog.Logger) sdk.Connector { return edi.New(l) },
	// example is the counter of docs/connectors.md, for trying an agent out.
	"example": func(l *slog.Logger) sdk.Connector { return counter.New(l) },
}

// Lookup returns the constructor of a built-in connector type.
func Lookup(name string) (Constructor, bool) {
	c, ok := connectors[name]
	return c, ok
}

// Names returns the built-in connector types, sorted.
func Names() []string {
	out := make([]string, 0, len(connectors))
	for n := range connectors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

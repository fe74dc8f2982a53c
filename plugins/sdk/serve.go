package sdk

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// ProtocolVersion is the version of the plugin protocol (proto/crossdock/plugin/v1 and
// the contract in this package). The agent refuses a plugin that speaks another one.
const ProtocolVersion = 1

// PluginName is the name the connector is dispensed under in the go-plugin set.
const PluginName = "connector"

// MaxMessageBytes bounds one gRPC message across the plugin boundary (a Read batch or a
// Write request). Keep batches well below it; 1000 events of a few hundred bytes are
// a fraction of a MiB.
const MaxMessageBytes = 64 << 20

// Handshake is the go-plugin handshake: the agent sets the cookie in the plugin's
// environment, and a plugin started by anything else (a human, a shell script) says so
// and exits instead of waiting for a connection.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "CROSSDOCK_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "4f1b9c2e7a3d4e8f9b0c1d2e3f4a5b6c-crossdock-connector",
}

// LogLevelEnv is read by Logger: debug, info (default), warn or error. The agent passes
// its own level.
const LogLevelEnv = "CROSSDOCK_PLUGIN_LOG_LEVEL"

// stderr is the process's stderr before go-plugin's Serve redirects os.Stderr: the agent
// reads it line by line and logs JSON lines as structured records.
var stderr = os.Stderr

// Logger returns a logger for a plugin process: JSON lines in go-plugin's (hclog's)
// format on stderr, which the agent turns back into key/value records in its own log,
// tagged with the connector's name. Pass it to the connector's constructor.
func Logger() *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToLower(os.Getenv(LogLevelEnv)) {
	case "debug", "trace":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: hclogAttrs}))
}

// hclogAttrs renames slog's built-in keys to the ones go-plugin parses.
func hclogAttrs(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
	case slog.LevelKey:
		l, _ := a.Value.Any().(slog.Level)
		s := "info"
		switch {
		case l < slog.LevelInfo:
			s = "debug"
		case l >= slog.LevelError:
			s = "error"
		case l >= slog.LevelWarn:
			s = "warn"
		}
		return slog.String("@level", s)
	case slog.MessageKey:
		return slog.String("@message", a.Value.String())
	}
	return a
}

// Serve runs c as a plugin until the agent stops it, then calls c.Close. Call it from
// main:
//
//	func main() { sdk.Serve(myconnector.New(sdk.Logger())) }
func Serve(c Connector) {
	go exitWithParent()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: &Plugin{Impl: c}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes))...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Level: hclog.Warn, Output: stderr, JSONFormat: true}),
	})
	if err := c.Close(); err != nil {
		Logger().Warn("connector close", "err", err)
	}
}

// Plugin is the go-plugin glue: the plugin side serves Impl over gRPC, the host side
// gets a *Client.
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the connector served (plugin side only).
	Impl Connector
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// GRPCServer registers the connector's gRPC service.
func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	registerServer(s, p.Impl)
	return nil
}

// GRPCClient returns a *Client over the plugin's connection.
func (p *Plugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return newClient(cc), nil
}

// receiveWindow is the host's fixed gRPC flow-control window: a source runs at most
// about this far ahead of the agent (grpc-go's default would grow it to 16 MiB per
// plugin, a lot for an agent that keeps its heap near 40 MiB).
const receiveWindow = 1 << 20

// DialOptions are the gRPC options a host uses with go-plugin's ClientConfig.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		grpc.WithInitialWindowSize(receiveWindow),
		grpc.WithInitialConnWindowSize(receiveWindow),
	}
}

// exitWithParent ends the plugin when the agent that started it is gone (the plugin was
// re-parented), so an orphan never keeps holding what the restarted agent needs: a
// replication slot, a lock, a port.
func exitWithParent() {
	parent := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != parent {
			Logger().Error("the agent that started this plugin is gone; exiting")
			os.Exit(1)
		}
	}
}

// ackTimeout bounds one Ack call from the host.
const ackTimeout = 30 * time.Second

package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	pluginv1 "github.com/crossdock/crossdock/proto/gen/crossdock/plugin/v1"
)

// server adapts a Connector to PluginService (plugin side).
type server struct {
	pluginv1.UnimplementedPluginServiceServer
	c Connector
}

func registerServer(s *grpc.Server, c Connector) {
	pluginv1.RegisterPluginServiceServer(s, &server{c: c})
}

// toStatus carries an error across the boundary: permanence as FAILED_PRECONDITION,
// a settings error as INVALID_ARGUMENT, cancellation as CANCELED.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var ce *ConfigError
	switch {
	case errors.As(err, &ce):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrPermanent):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

func (s *server) GetSpec(context.Context, *pluginv1.GetSpecRequest) (*pluginv1.GetSpecResponse, error) {
	sp := s.c.Spec()
	return &pluginv1.GetSpecResponse{Name: sp.Name, Version: sp.Version, Source: sp.Source, Sink: sp.Sink, Description: sp.Description}, nil
}

func (s *server) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	err := s.c.Configure(ctx, req.GetSettingsJson())
	var ce *ConfigError
	if errors.As(err, &ce) {
		return &pluginv1.ConfigureResponse{ConfigError: &pluginv1.ConfigError{Field: ce.Field, Reason: ce.Reason}}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.ConfigureResponse{}, nil
}

func (s *server) Health(ctx context.Context, _ *pluginv1.HealthRequest) (*pluginv1.HealthResponse, error) {
	if err := s.c.Health(ctx); err != nil {
		return &pluginv1.HealthResponse{Error: err.Error()}, nil
	}
	return &pluginv1.HealthResponse{}, nil
}

func (s *server) Read(req *pluginv1.ReadRequest, stream grpc.ServerStreamingServer[pluginv1.ReadResponse]) error {
	src, ok := s.c.(Source)
	if !ok {
		return status.Error(codes.Unimplemented, "this connector is not a source")
	}
	emit := func(ctx context.Context, b Batch) error {
		if len(b.EventPositions) != 0 && len(b.EventPositions) != len(b.Events) {
			return Permanent(fmt.Errorf("sdk: batch at %q has %d events but %d event positions", b.Position, len(b.Events), len(b.EventPositions)))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return stream.Send(&pluginv1.ReadResponse{Events: b.Events, Position: b.Position, EventPositions: b.EventPositions})
	}
	return toStatus(src.Read(stream.Context(), req.GetFrom(), emit))
}

func (s *server) Ack(ctx context.Context, req *pluginv1.AckRequest) (*pluginv1.AckResponse, error) {
	src, ok := s.c.(Source)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this connector is not a source")
	}
	if err := src.Ack(ctx, req.GetPosition()); err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.AckResponse{}, nil
}

func (s *server) Write(ctx context.Context, req *pluginv1.WriteRequest) (*pluginv1.WriteResponse, error) {
	sink, ok := s.c.(Sink)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this connector is not a sink")
	}
	res, err := sink.Write(ctx, req.GetEvents())
	if err != nil {
		return nil, toStatus(err)
	}
	if len(res) != len(req.GetEvents()) {
		return nil, status.Error(codes.Internal, fmt.Sprintf("sdk: the sink returned %d results for %d events", len(res), len(req.GetEvents())))
	}
	out := &pluginv1.WriteResponse{Results: make([]*pluginv1.WriteResult, len(res))}
	for i, r := range res {
		wr := &pluginv1.WriteResult{EventId: r.EventID, Ref: r.Ref}
		if r.Err != nil {
			wr.Error, wr.Permanent = r.Err.Error(), errors.Is(r.Err, ErrPermanent)
		}
		out.Results[i] = wr
	}
	return out, nil
}

// Client is the host's side of a plugin: the Connector, Source and Sink calls across the
// go-plugin boundary. Errors the plugin marked permanent wrap ErrPermanent again, and a
// settings error is a *ConfigError.
type Client struct {
	rpc pluginv1.PluginServiceClient
}

func newClient(cc grpc.ClientConnInterface) *Client {
	return &Client{rpc: pluginv1.NewPluginServiceClient(cc)}
}

// fromStatus turns a gRPC error back into the SDK's error kinds.
func fromStatus(what string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("plugin %s: %w", what, err)
	}
	msg := fmt.Errorf("plugin %s: %s", what, st.Message())
	switch st.Code() {
	case codes.FailedPrecondition, codes.InvalidArgument, codes.Unimplemented:
		return Permanent(msg)
	case codes.Canceled:
		return fmt.Errorf("%w: %w", context.Canceled, msg)
	}
	return fmt.Errorf("plugin %s: %w", what, err)
}

// Spec asks the plugin what it is.
func (c *Client) Spec(ctx context.Context) (Spec, error) {
	r, err := c.rpc.GetSpec(ctx, &pluginv1.GetSpecRequest{})
	if err != nil {
		return Spec{}, fromStatus("spec", err)
	}
	return Spec{Name: r.GetName(), Version: r.GetVersion(), Source: r.GetSource(), Sink: r.GetSink(), Description: r.GetDescription()}, nil
}

// Configure hands the plugin its settings (a JSON object).
func (c *Client) Configure(ctx context.Context, settings []byte) error {
	r, err := c.rpc.Configure(ctx, &pluginv1.ConfigureRequest{SettingsJson: settings})
	if err != nil {
		return fromStatus("configure", err)
	}
	if ce := r.GetConfigError(); ce != nil {
		return &ConfigError{Field: ce.GetField(), Reason: ce.GetReason()}
	}
	return nil
}

// Health asks whether the plugin reaches its system.
func (c *Client) Health(ctx context.Context) error {
	r, err := c.rpc.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil {
		return fromStatus("health", err)
	}
	if r.GetError() != "" {
		return errors.New(r.GetError())
	}
	return nil
}

// Read streams batches from position from and calls fn with each, in order, until ctx
// ends, fn fails or the source stops. It returns fn's error as is.
func (c *Client) Read(ctx context.Context, from string, fn func(Batch) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Read(ctx, &pluginv1.ReadRequest{From: from})
	if err != nil {
		return fromStatus("read", err)
	}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fromStatus("read", err)
		}
		if err := fn(Batch{Events: r.GetEvents(), Position: r.GetPosition(), EventPositions: r.GetEventPositions()}); err != nil {
			return err
		}
	}
}

// Ack tells the source everything up to position is durable.
func (c *Client) Ack(ctx context.Context, position string) error {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	_, err := c.rpc.Ack(ctx, &pluginv1.AckRequest{Position: position})
	return fromStatus("ack", err)
}

// Write writes events through the plugin's sink; one result per event.
func (c *Client) Write(ctx context.Context, events []*eventv1.Event) ([]WriteResult, error) {
	r, err := c.rpc.Write(ctx, &pluginv1.WriteRequest{Events: events})
	if err != nil {
		return nil, fromStatus("write", err)
	}
	if len(r.GetResults()) != len(events) {
		return nil, fmt.Errorf("plugin write: %d results for %d events", len(r.GetResults()), len(events))
	}
	out := make([]WriteResult, len(events))
	for i, wr := range r.GetResults() {
		out[i] = WriteResult{EventID: wr.GetEventId(), Ref: wr.GetRef()}
		if wr.GetError() != "" {
			out[i].Err = errors.New(wr.GetError())
			if wr.GetPermanent() {
				out[i].Err = Permanent(out[i].Err)
			}
		}
	}
	return out, nil
}

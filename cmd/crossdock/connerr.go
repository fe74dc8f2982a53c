package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
)

// explainTransport rewrites the error of a command whose connection to the server failed
// or broke (rather than an answer of the server) in plain words: connect's own words for
// that (`write envelope: EOF`, `incomplete envelope: unexpected EOF`, `connection
// refused`) do not say that the server is gone. Other errors are returned unchanged.
func explainTransport(cmd *cobra.Command, err error) error {
	if cmd == nil || err == nil {
		return err
	}
	daemon := cmd.Parent() != nil && !cmd.Parent().HasParent() && (cmd.Name() == "agent" || cmd.Name() == "server")
	if daemon || cmd.Name() == "demo" || cmd.Name() == "repair" || cmd.Name() == "plugin" {
		return err // servers and local tools: no server to blame
	}
	if f := cmd.Flags().Lookup("agent"); f != nil && (cmd.Name() == "publish" || cmd.Name() == "status" && cmd.Parent() != nil && cmd.Parent().Name() == "agent") {
		return transportError(err, "the agent's local API at "+f.Value.String(), "--agent")
	}
	c, cerr := resolveConfig()
	if cerr != nil {
		return err
	}
	return transportError(err, "the control plane at "+c.Addr, "--addr, CROSSDOCK_ADDR or the config file")
}

// transportError says what happened to the connection to who ("the control plane at
// ADDR"), keeping err (with what the command was doing) after it, when err is a failed
// or broken connection; otherwise it returns err. addrFrom says where the address was
// given.
func transportError(err error, who, addrFrom string) error {
	switch {
	case err == nil, connect.IsWireError(err), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err // the server answered, or the caller gave up
	case errors.Is(err, syscall.ECONNREFUSED), strings.Contains(err.Error(), "connection refused"):
		return fmt.Errorf("%s is not answering (connection refused): is it running, and is that its address (%s)?\n  %w", who, addrFrom, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		containsAny(err.Error(), "write envelope", "incomplete envelope", "unexpected EOF", "connection reset", "broken pipe", "server sent GOAWAY", "no recent network activity", ": EOF"):
		return fmt.Errorf("%s closed the connection: is it still running? (a restart or a crash ends every call; run the command again once it is back)\n  %w", who, err)
	case connect.CodeOf(err) == connect.CodeUnavailable:
		return fmt.Errorf("%s is not answering: is it running?\n  %w", who, err)
	}
	return err
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

// TestTransportError classifies errors as connect-go reports them (the e2e test
// TestApplyExitCodeAndReplayInterrupt sees the real ones from a killed server).
func TestTransportError(t *testing.T) {
	const who = "the control plane at 127.0.0.1:7443"
	for _, tc := range []struct {
		name string
		err  error
		want string // "" = unchanged
	}{
		{"write envelope", fmt.Errorf("restore snapshot: %w", connect.NewError(connect.CodeUnknown, fmt.Errorf("write envelope: %w", io.EOF))), "closed the connection"},
		{"incomplete envelope", fmt.Errorf("tail events: %w", connect.NewError(connect.CodeInternal, fmt.Errorf("protocol error: incomplete envelope: %w", io.ErrUnexpectedEOF))), "closed the connection"},
		{"refused", connect.NewError(connect.CodeUnavailable, errors.New("dial tcp 127.0.0.1:7443: connect: connection refused")), "is not answering (connection refused)"},
		{"unavailable", connect.NewError(connect.CodeUnavailable, errors.New("no route to host")), "is not answering"},
		{"an answer of the server", connect.NewWireError(connect.CodeUnavailable, errors.New("not the leader")), ""},
		{"Ctrl-C", fmt.Errorf("replay: %w", connect.NewError(connect.CodeCanceled, context.Canceled)), ""},
		{"a local error", errors.New("--from: required"), ""},
	} {
		got := transportError(tc.err, who, "--addr")
		switch {
		case tc.want == "" && got != tc.err:
			t.Errorf("%s: rewritten to %q", tc.name, got)
		case tc.want != "" && (!strings.HasPrefix(got.Error(), who+" "+tc.want) || !errors.Is(got, tc.err)):
			t.Errorf("%s: %q, want it to start %q and wrap the cause", tc.name, got, who+" "+tc.want)
		}
	}
}

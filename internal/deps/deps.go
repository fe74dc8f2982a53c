// Package deps pins the modules the packages under construction use, so that go.mod
// keeps them while those packages are written. It is removed once they all import them.
package deps

import (
	_ "connectrpc.com/connect"
	_ "github.com/dgraph-io/badger/v4"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-wal"
	_ "github.com/quic-go/quic-go/http3"
	_ "github.com/sourcegraph/conc"
	_ "github.com/spf13/cobra"
	_ "golang.org/x/net/http2"
	_ "google.golang.org/protobuf/proto"
	_ "sigs.k8s.io/yaml"
)

// Command example is a connector plugin binary built on plugins/sdk: the counter of
// docs/connectors.md. Configure it in the agent with its path and sha256.
package main

import (
	"github.com/crossdock/crossdock/plugins/example/counter"
	"github.com/crossdock/crossdock/plugins/sdk"
)

func main() { sdk.Serve(counter.New(sdk.Logger())) }

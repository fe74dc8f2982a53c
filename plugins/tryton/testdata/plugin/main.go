// Command plugin serves the tryton connector as a standalone plugin binary, for the
// test that runs it under the agent's plugin host (the crossdock binary serves it as
// `crossdock plugin tryton`).
package main

import (
	"github.com/crossdock/crossdock/plugins/sdk"
	"github.com/crossdock/crossdock/plugins/tryton"
)

func main() { sdk.Serve(tryton.New(sdk.Logger())) }

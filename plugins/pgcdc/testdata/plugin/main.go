// Command plugin serves the pgcdc connector as a standalone plugin binary, for the test
// that runs it under the agent's plugin host (the crossdock binary serves it as
// `crossdock plugin pgcdc`).
package main

import (
	"github.com/crossdock/crossdock/plugins/pgcdc"
	"github.com/crossdock/crossdock/plugins/sdk"
)

func main() { sdk.Serve(pgcdc.New(sdk.Logger())) }

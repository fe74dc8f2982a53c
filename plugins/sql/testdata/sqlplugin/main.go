// Command sqlplugin serves the sql connector alone, as an external plugin binary, for
// the tests that run it under the agent's plugin host.
package main

import (
	"github.com/crossdock/crossdock/plugins/sdk"
	sqlconnector "github.com/crossdock/crossdock/plugins/sql"
)

func main() { sdk.Serve(sqlconnector.New(sdk.Logger())) }

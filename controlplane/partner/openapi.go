package partner

import _ "embed"

// OpenAPI is the OpenAPI document of crossdock.partner.v1, generated from the .proto
// files by ./openapigen (make gen) and served at /openapi/partner.v1.yaml.
//
//go:embed partner.v1.openapi.yaml
var OpenAPI []byte

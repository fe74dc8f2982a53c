package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeliveryWebhookAllow: through the binary, a server started without
// --webhook-allow refuses a Destination aimed at the agent's local API on loopback,
// naming the document, the field and the flag; a bad --webhook-allow value stops the server
// at start.
func TestDeliveryWebhookAllow(t *testing.T) {
	out, err := run(t, "server", "--data-dir", t.TempDir(), "--webhook-allow", "10.0.0.0/33")
	if err == nil || !strings.Contains(err.Error(), `--webhook-allow "10.0.0.0/33": not a CIDR prefix`) {
		t.Fatalf("server with a bad --webhook-allow: %v\n%s", err, out)
	}

	c := startServer(t)
	doc := writeFile(t, filepath.Join(t.TempDir(), "loop.yaml"), fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: loop}
spec: {type: webhook, url: "http://127.0.0.1:7480/crossdock.agent.v1.AgentService/Publish", secret: %q}
`, e2eSecret))
	out, err = run(t, "apply", "-f", doc, "--config", c.config)
	if err == nil {
		t.Fatalf("apply of a loopback webhook succeeded:\n%s", out)
	}
	mustContain(t, err.Error(), "apply refused:", "destinations/loop: spec.url: blocked: 127.0.0.1 is a loopback address",
		"--webhook-allow 127.0.0.1/32")
	if out, _ := run(t, "destinations", "ls", "--config", c.config); strings.Contains(out, "loop") {
		t.Fatalf("the refused destination was stored:\n%s", out)
	}
}

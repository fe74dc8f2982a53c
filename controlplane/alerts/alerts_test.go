package alerts

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func TestAttemptsCountOnlyTheWindow(t *testing.T) {
	var a attempts
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	a.reset(now)
	a.add("shop", true, now.Add(-10*time.Minute)) // outside a 5m window
	a.add("shop", false, now.Add(-4*time.Minute))
	a.add("shop", true, now.Add(-time.Minute))
	a.add("shop", true, now)
	a.add("other", true, now)
	if total, failed := a.rate("shop", 5*time.Minute, now); total != 3 || failed != 2 {
		t.Errorf("rate(5m) = %d attempts, %d failed; want 3, 2", total, failed)
	}
	if total, failed := a.rate("shop", 15*time.Minute, now); total != 4 || failed != 3 {
		t.Errorf("rate(15m) = %d attempts, %d failed; want 4, 3", total, failed)
	}
	// A slot reused an hour later holds only the new bucket.
	later := now.Add(time.Hour + attemptBucket)
	a.add("shop", false, later)
	if total, failed := a.rate("shop", time.Minute, later); total != 1 || failed != 0 {
		t.Errorf("rate an hour later = %d, %d; want 1, 0", total, failed)
	}
}

func TestNotificationShape(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	n := NewNotification("lag", "oncall", "https://cp:7443", []*storev1.AlertInstance{
		{Alert: "lag", Key: "destination=a", State: StateResolved, StartedAt: timestamppb.New(t0), ResolvedAt: timestamppb.New(t0.Add(time.Minute)),
			Labels: map[string]string{"alertname": "lag", "severity": "critical", "destination": "a"}, Summary: "a", Value: "v"},
		{Alert: "lag", Key: "destination=b", State: StateFiring, StartedAt: timestamppb.New(t0),
			Labels: map[string]string{"alertname": "lag", "severity": "critical", "destination": "b"}, Summary: "b", Value: "v"},
	})
	if n.Version != "4" || n.Status != StateFiring || n.GroupKey != `{}:{alertname="lag"}` || n.Receiver != "oncall" {
		t.Errorf("notification = %+v", n)
	}
	if len(n.CommonLabels) != 2 || n.CommonLabels["severity"] != "critical" || n.CommonLabels["destination"] != "" {
		t.Errorf("commonLabels = %v; want alertname and severity only", n.CommonLabels)
	}
	if n.CommonAnnotations["value"] != "v" || n.CommonAnnotations["summary"] != "" {
		t.Errorf("commonAnnotations = %v", n.CommonAnnotations)
	}
	if !n.Alerts[0].EndsAt.Equal(t0.Add(time.Minute)) || !n.Alerts[1].EndsAt.IsZero() {
		t.Errorf("endsAt = %v, %v; want the resolution, then zero while firing", n.Alerts[0].EndsAt, n.Alerts[1].EndsAt)
	}
	if n.Alerts[0].Fingerprint == n.Alerts[1].Fingerprint || len(n.Alerts[0].Fingerprint) != 16 {
		t.Errorf("fingerprints %q %q", n.Alerts[0].Fingerprint, n.Alerts[1].Fingerprint)
	}
}

// TestObservabilityDocNotificationExample keeps the notification shown in
// docs/observability.md a Notification, field for field.
func TestObservabilityDocNotificationExample(t *testing.T) {
	b, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```json\n(.*?)```").FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("docs/observability.md has no json block")
	}
	dec := json.NewDecoder(strings.NewReader(m[1]))
	dec.DisallowUnknownFields()
	var n Notification
	if err := dec.Decode(&n); err != nil {
		t.Fatalf("the example is not a Notification: %v", err)
	}
	if n.Version != "4" || len(n.Alerts) != 1 || n.Alerts[0].Fingerprint == "" {
		t.Errorf("example = %+v", n)
	}
}

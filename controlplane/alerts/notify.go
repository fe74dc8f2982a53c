package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/seal"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Notification is the body of an Alertmanager webhook notification (version 4), as
// Alertmanager's webhook receiver sends it: one per Alert document and receiver, with
// the instances whose change was not notified yet.
type Notification struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []AMAlert         `json:"alerts"`
}

// AMAlert is one alert of a Notification.
type AMAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"` // zero (0001-01-01T00:00:00Z) while firing
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// NewNotification builds the notification of one Alert's instances for receiver.
func NewNotification(alert, receiver, externalURL string, ins []*storev1.AlertInstance) *Notification {
	n := &Notification{Version: "4", Status: StateResolved, Receiver: receiver, ExternalURL: externalURL,
		GroupLabels: map[string]string{"alertname": alert},
		GroupKey:    fmt.Sprintf("{}:{alertname=%q}", alert)}
	for i, in := range ins {
		a := AMAlert{Status: in.GetState(), Labels: in.GetLabels(), StartsAt: in.GetStartedAt().AsTime().UTC(),
			Annotations: map[string]string{"summary": in.GetSummary(), "value": in.GetValue()},
			Fingerprint: fingerprint(in.GetLabels())}
		if a.Labels == nil {
			a.Labels = map[string]string{"alertname": alert}
		}
		if in.GetState() == StateFiring {
			n.Status = StateFiring
		} else if in.GetResolvedAt() != nil {
			a.EndsAt = in.GetResolvedAt().AsTime().UTC()
		}
		if i == 0 {
			n.CommonLabels, n.CommonAnnotations = maps.Clone(a.Labels), maps.Clone(a.Annotations)
		} else {
			intersect(n.CommonLabels, a.Labels)
			intersect(n.CommonAnnotations, a.Annotations)
		}
		n.Alerts = append(n.Alerts, a)
	}
	if n.CommonLabels == nil {
		n.CommonLabels, n.CommonAnnotations = map[string]string{}, map[string]string{}
	}
	return n
}

func intersect(common, m map[string]string) {
	for k, v := range common {
		if m[k] != v {
			delete(common, k)
		}
	}
}

// fingerprint identifies an alert by its labels (16 hex digits, like Alertmanager's).
func fingerprint(labels map[string]string) string {
	h := fnv.New64a()
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(labels[k]))
		h.Write([]byte{0})
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// Sender posts signed notifications.
type Sender struct {
	client *http.Client
	keys   *seal.Keyring
}

// NewSender returns a Sender whose connections policy checks (nil: public addresses
// only), like webhook deliveries, opening destination secrets sealed under keys (the
// cluster's secrets key; docs/operations.md, Secrets at rest).
func NewSender(policy *delivery.AddressPolicy, keys *seal.Keyring) *Sender {
	return &Sender{client: delivery.NewWebhookHTTPClient(policy), keys: keys}
}

// Send POSTs body to a webhook destination, signed with its secret (Standard Webhooks:
// webhook-id, webhook-timestamp, webhook-signature), and returns an error unless it
// answers 2xx.
func (s *Sender) Send(ctx context.Context, dest *routing.DestinationSpec, id string, body []byte) error {
	secret, err := s.keys.OpenString(seal.PurposeDestinationSecret, dest.Secret)
	if err != nil {
		return fmt.Errorf("open the destination's secret: %w", err)
	}
	key, err := delivery.ParseSecret(secret)
	if err != nil {
		return err
	}
	timeout := routing.DefaultTimeout
	if dest.Timeout != nil {
		timeout = dest.Timeout.Duration
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	for k, v := range dest.Headers {
		req.Header.Set(k, v)
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "crossdock-alerts/1")
	req.Header.Set(delivery.HeaderID, id)
	req.Header.Set(delivery.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(delivery.HeaderSignature, delivery.Sign(key, id, ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// notify sends the changes not notified yet, one notification per Alert and receiver,
// and records them notified once every receiver of the Alert took them. An Alert
// without receivers has its changes recorded notified at once. A failed receiver is
// tried again at the next evaluations, with a growing pause (every receiver of that
// Alert gets the notification again then: receivers deduplicate by webhook-id).
func (e *Evaluator) notify(ctx context.Context, d *docs) error {
	states, err := e.cfg.Store.Ledger().AlertStates()
	if err != nil {
		return fmt.Errorf("alerts: read alert states: %w", err)
	}
	byAlert := map[string][]*storev1.AlertInstance{}
	for _, s := range states {
		if !s.GetNotified() {
			byAlert[s.GetAlert()] = append(byAlert[s.GetAlert()], s)
		}
	}
	mark := &storev1.MarkAlertsNotified{}
	now := e.cfg.Now()
	for _, name := range slices.Sorted(maps.Keys(byAlert)) {
		ins := byAlert[name]
		a, ok := d.byName[name]
		if !ok {
			continue // forgotten at the next evaluation
		}
		if !e.retryDue(name, now) {
			continue
		}
		var last uint64
		for _, in := range ins {
			last = max(last, in.GetChangedIndex())
		}
		ok = true
		for _, r := range a.Alert.Notify {
			dd, found := d.dests[r]
			if !found || dd.Destination == nil || dd.Destination.Type != routing.DestinationWebhook {
				e.cfg.Logger.Warn("alerts: receiver is not a webhook destination; skipped", "alert", name, "receiver", r)
				continue
			}
			body, err := json.Marshal(NewNotification(name, r, e.cfg.ExternalURL, ins))
			if err != nil {
				return fmt.Errorf("alerts: encode notification: %w", err)
			}
			id := fmt.Sprintf("alert_%s_%d", name, last)
			if err := e.cfg.Send.Send(ctx, dd.Destination, id, body); err != nil {
				ok = false
				wait := e.failed(name, now)
				e.cfg.Logger.Warn("alerts: notification not delivered; will try again", "alert", name, "receiver", r, "url", dd.Destination.URL, "err", err, "retry_in", wait)
				break
			}
		}
		if !ok {
			continue
		}
		e.succeeded(name)
		for _, in := range ins {
			mark.Refs = append(mark.Refs, &storev1.AlertRef{Alert: in.GetAlert(), Key: in.GetKey(), ChangedIndex: in.GetChangedIndex()})
		}
	}
	if len(mark.Refs) == 0 {
		return nil
	}
	if _, err := e.cfg.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_MARK_ALERTS_NOTIFIED, mark); err != nil {
		return fmt.Errorf("alerts: record %d notifications sent: %w", len(mark.Refs), err)
	}
	return nil
}

// Retry pauses of a failing receiver: from the interval, doubling, at most maxRetryWait.
const maxRetryWait = 5 * time.Minute

type retry struct {
	n    int
	next time.Time
}

func (e *Evaluator) retryDue(alert string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.retries[alert]
	return !ok || !now.Before(r.next)
}

func (e *Evaluator) failed(alert string, now time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.retries == nil {
		e.retries = map[string]retry{}
	}
	r := e.retries[alert]
	wait := min(e.cfg.Interval<<min(r.n, 16), maxRetryWait)
	r.n++
	r.next = now.Add(wait)
	e.retries[alert] = r
	return wait
}

func (e *Evaluator) succeeded(alert string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.retries, alert)
}

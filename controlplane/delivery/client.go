package delivery

import "net/http"

// NewWebhookHTTPClient returns an HTTP client for other signed webhooks the control
// plane sends (alert notifications): like the delivery engine's, its connections are
// checked by policy (nil: public addresses only) and redirects are not followed.
func NewWebhookHTTPClient(policy *AddressPolicy) *http.Client {
	if policy == nil {
		policy, _ = NewAddressPolicy(nil)
	}
	return newHTTPClient(policy, nil)
}

package partner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/routing"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
)

var _ partnerv1connect.PartnerServiceHandler = (*Server)(nil)

// maxSKULength bounds one SKU or location in a request.
const maxSKULength = 128

// violations collects field-level validation errors.
type violations []*errdetails.BadRequest_FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// err is InvalidArgument naming every bad field, with a BadRequest detail.
func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	msg := ""
	for i, fv := range v {
		if i > 0 {
			msg += "; "
		}
		msg += fv.GetField() + ": " + fv.GetDescription()
	}
	e := connect.NewError(connect.CodeInvalidArgument, errors.New(msg))
	if d, err := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: v}); err == nil {
		e.AddDetail(d)
	}
	return e
}

func checkList(v *violations, field string, items []string, min, max int) {
	if len(items) < min || len(items) > max {
		v.add(field, "%d entries, want %d to %d", len(items), min, max)
	}
	for i, s := range items {
		if s == "" || len(s) > maxSKULength {
			v.add(fmt.Sprintf("%s[%d]", field, i), "must be 1 to %d characters", maxSKULength)
		}
	}
}

// admit finishes the checks of an admitted call once its request is valid: it takes
// one request of the daily quota and sets the rate limit fields on the answer.
func (s *Server) admit(ctx context.Context, h interface{ Set(string, string) }, v violations) (*call, error) {
	c := callFrom(ctx)
	if c == nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("API key required: Authorization: Bearer cdk_..."))
	}
	now := s.now()
	if err := v.err(); err != nil {
		return nil, s.refused(c, ReasonInvalid, now, err)
	}
	if s.Views == nil { // nothing to answer from: the call must not cost quota
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("the inventory views are not available on this node yet; retry shortly"))
	}
	left, err := s.Quota.Take(ctx, c.partner.Name, uint64(c.partner.Limits.DailyQuota))
	if err != nil {
		secs := int(secondsPerDay - now.Unix()%secondsPerDay)
		msg := fmt.Errorf("partner %s: %w; it resets at 00:00 UTC", c.partner.Name, err)
		if errors.Is(err, ErrQuotaUnavailable) {
			secs = 1
			msg = fmt.Errorf("this node has served the daily quota it holds for partner %s and cannot reach the cluster leader to lease more; retry, preferably on another node: %w", c.partner.Name, err)
		}
		ce := connect.NewError(connect.CodeResourceExhausted, msg)
		ce.Meta().Set("Retry-After", strconv.Itoa(secs))
		setRateLimitHeaders(ce.Meta(), c.partner, c.tokens, 1, 0, now.Unix())
		return nil, s.refused(c, ReasonQuota, now, ce)
	}
	hdr := make(map[string][]string)
	setRateLimitHeaders(hdr, c.partner, c.tokens, 1, int64(left), now.Unix())
	for k, vs := range hdr {
		h.Set(k, vs[0])
	}
	return c, nil
}

// refused records a refusal in the audit trail (the interceptor counts the call).
func (s *Server) refused(c *call, reason string, at time.Time, err error) error {
	var ce *connect.Error
	msg := err.Error()
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	s.Usage.Refuse(c.partner.Name, refusal(s.Node, c.method, reason, c.keyID, msg, at))
	s.logRefusal(c.partner.Name, c.method, reason, c.keyID, msg)
	return err
}

func (s *Server) views(ctx context.Context, minSeq uint64) (Reader, error) {
	if s.Views == nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("the inventory views are not available on this node yet; retry shortly"))
	}
	if minSeq > 0 && s.Views.Seq() < minSeq {
		wait := s.MinSeqWait
		if wait <= 0 {
			wait = minSeqMaxWait
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := s.Views.WaitFor(wctx, minSeq); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("the views on this node reflect seq %d, not yet min_seq %d; retry", s.Views.Seq(), minSeq))
		}
	}
	return s.Views, nil
}

// GetAvailability answers what the partner is offered per SKU and location.
func (s *Server) GetAvailability(ctx context.Context, req *connect.Request[partnerv1.GetAvailabilityRequest]) (*connect.Response[partnerv1.GetAvailabilityResponse], error) {
	c := callFrom(ctx)
	var v violations
	m := req.Msg
	if c != nil {
		v = validateAvailability(m, c.partner)
	}
	res := connect.NewResponse(&partnerv1.GetAvailabilityResponse{})
	c, err := s.admit(ctx, res.Header(), v)
	if err != nil {
		return nil, err
	}
	r, err := s.views(ctx, m.GetMinSeq())
	if err != nil {
		return nil, err
	}
	res.Msg.Seq = r.Seq()
	for _, l := range Sees(c.partner.Spec, r, m.GetSkus(), m.GetLocations()) {
		res.Msg.Availability = append(res.Msg.Availability, &partnerv1.Availability{
			Sku: l.SKU, Location: l.Location, Available: l.Available,
			UnitOfMeasure: l.UnitOfMeasure, Seq: l.Seq, At: timestamppb.New(l.At),
		})
	}
	return res, nil
}

// Sees is what a partner with spec sees of the levels of skus at locations (empty: the
// partner's locations): only its SKUs and locations, each level's Available replaced
// by what its allocation rule offers. GetAvailability answers it, and `crossdock
// inventory get --as-partner` shows it to an operator.
func Sees(spec *routing.PartnerSpec, r Reader, skus, locations []string) []Level {
	visible := make([]string, 0, len(skus))
	for _, sku := range skus {
		if spec.SeesSKU(sku) {
			visible = append(visible, sku)
		}
	}
	if len(visible) == 0 {
		return nil
	}
	if len(locations) == 0 {
		locations = spec.Locations // nil: every location
	}
	var out []Level
	for _, l := range r.Levels(visible, locations) {
		if !spec.SeesSKU(l.SKU) || !spec.SeesLocation(l.Location) {
			continue
		}
		l.Available = routing.Allocate(spec.Allocation, l.Available)
		out = append(out, l)
	}
	return out
}

// GetPrices answers the partner's price list entries for SKUs.
func (s *Server) GetPrices(ctx context.Context, req *connect.Request[partnerv1.GetPricesRequest]) (*connect.Response[partnerv1.GetPricesResponse], error) {
	c := callFrom(ctx)
	var v violations
	if c != nil {
		v = validatePrices(req.Msg, c.partner)
	}
	res := connect.NewResponse(&partnerv1.GetPricesResponse{})
	c, err := s.admit(ctx, res.Header(), v)
	if err != nil {
		return nil, err
	}
	r, err := s.views(ctx, req.Msg.GetMinSeq())
	if err != nil {
		return nil, err
	}
	spec := c.partner.Spec
	res.Msg.Seq = r.Seq()
	if spec.PriceList == "" {
		return res, nil
	}
	var skus []string
	for _, sku := range req.Msg.GetSkus() {
		if spec.SeesSKU(sku) {
			skus = append(skus, sku)
		}
	}
	if len(skus) == 0 {
		return res, nil
	}
	for _, p := range r.Prices(skus, spec.PriceList) {
		if p.PriceList != spec.PriceList || !spec.SeesSKU(p.SKU) {
			continue
		}
		out := &partnerv1.Price{Sku: p.SKU, PriceList: p.PriceList, Currency: p.Currency, Amount: p.Amount, Seq: p.Seq}
		if !p.ValidFrom.IsZero() {
			out.ValidFrom = timestamppb.New(p.ValidFrom)
		}
		if !p.ValidTo.IsZero() {
			out.ValidTo = timestamppb.New(p.ValidTo)
		}
		res.Msg.Prices = append(res.Msg.Prices, out)
	}
	return res, nil
}

// ListItems pages through the items the partner sees.
func (s *Server) ListItems(ctx context.Context, req *connect.Request[partnerv1.ListItemsRequest]) (*connect.Response[partnerv1.ListItemsResponse], error) {
	c := callFrom(ctx)
	var v violations
	size := 0
	if c != nil {
		v, size = validateListItems(req.Msg, c.partner)
	}
	res := connect.NewResponse(&partnerv1.ListItemsResponse{})
	c, err := s.admit(ctx, res.Header(), v)
	if err != nil {
		return nil, err
	}
	r, err := s.views(ctx, 0)
	if err != nil {
		return nil, err
	}
	res.Msg.Seq = r.Seq()
	items, next := r.Items(req.Msg.GetPageToken(), size, c.partner.Spec.SeesSKU)
	for _, it := range items {
		res.Msg.Items = append(res.Msg.Items, &partnerv1.Item{Sku: it.SKU, Name: it.Name, Description: it.Description, UnitOfMeasure: it.UnitOfMeasure, Gtin: it.GTIN, Seq: it.Seq})
	}
	res.Msg.NextPageToken = next
	return res, nil
}

// validateAvailability checks a GetAvailability request against the partner's limits.
func validateAvailability(m *partnerv1.GetAvailabilityRequest, p *Partner) violations {
	var v violations
	checkList(&v, "skus", m.GetSkus(), 1, p.Limits.MaxItemsPerCall)
	checkList(&v, "locations", m.GetLocations(), 0, p.Limits.MaxItemsPerCall)
	for i, l := range m.GetLocations() {
		if l != "" && len(l) <= maxSKULength && !p.Spec.SeesLocation(l) {
			v.add(fmt.Sprintf("locations[%d]", i), "%q is not one of your locations", l)
		}
	}
	return v
}

// validatePrices checks a GetPrices request.
func validatePrices(m *partnerv1.GetPricesRequest, p *Partner) violations {
	var v violations
	checkList(&v, "skus", m.GetSkus(), 1, p.Limits.MaxItemsPerCall)
	return v
}

// validateListItems checks a ListItems request and returns the page size to use.
func validateListItems(m *partnerv1.ListItemsRequest, p *Partner) (violations, int) {
	var v violations
	size := int(m.GetPageSize())
	if size < 0 || size > p.Limits.MaxItemsPerCall {
		v.add("page_size", "%d is outside 0 to %d", size, p.Limits.MaxItemsPerCall)
	}
	if size <= 0 {
		size = p.Limits.MaxItemsPerCall
	}
	if len(m.GetPageToken()) > maxSKULength {
		v.add("page_token", "not a page token from a ListItems answer")
	}
	return v, size
}

package partner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/diskguard"
	"github.com/crossdock/crossdock/controlplane/store"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// ErrNoLeader is returned when this node knows no leader to send a partner command to
// (no election yet, or this node is cut off from the majority).
var ErrNoLeader = errors.New("no raft leader reachable from this node")

// Proposer puts a partner command through raft: on this node when it leads, else
// through the leader's PartnerNodeService.
type Proposer struct {
	Store *store.Store
	// Client is an HTTP client presenting this node's certificate.
	Client *http.Client
	// Timeout bounds one proposal (5s when 0).
	Timeout time.Duration
	// MaxLeaderSilence: a follower whose last contact from the leader is older does not
	// forward (2s when 0).
	MaxLeaderSilence time.Duration
}

// forwardable are the command types a follower may hand the leader.
var forwardable = map[storev1.CommandType]func() proto.Message{
	storev1.CommandType_COMMAND_TYPE_LEASE_QUOTA:           func() proto.Message { return &storev1.LeaseQuota{} },
	storev1.CommandType_COMMAND_TYPE_RETURN_QUOTA:          func() proto.Message { return &storev1.ReturnQuota{} },
	storev1.CommandType_COMMAND_TYPE_RECORD_PARTNER_USAGE:  func() proto.Message { return &storev1.RecordPartnerUsage{} },
	storev1.CommandType_COMMAND_TYPE_SUBMIT_PARTNER_EVENTS: func() proto.Message { return &storev1.SubmitPartnerEvents{} },
}

// Propose proposes msg and merges the command's result into result (may be nil). While
// there is no leader, or the one asked is no longer it, it tries again until ctx ends.
func (p *Proposer) Propose(ctx context.Context, typ storev1.CommandType, msg proto.Message, result proto.Message) error {
	for {
		err := p.proposeOnce(ctx, typ, msg, result)
		if err == nil || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// retryable: no leader known, or the node asked is not (or no longer) the leader. An
// entry that may have been committed (a timeout) is not retried: the caller learns the
// outcome is unknown, and a lease lost that way only serves less.
func retryable(err error) bool {
	return errors.Is(err, ErrNoLeader) || errors.Is(err, store.ErrNotLeader) || connect.CodeOf(err) == connect.CodeUnavailable && strings.Contains(err.Error(), "not the leader")
}

func (p *Proposer) proposeOnce(ctx context.Context, typ storev1.CommandType, msg proto.Message, result proto.Message) error {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if p.Store.IsLeader() {
		res, err := p.Store.Propose(ctx, typ, msg)
		if err != nil {
			return fmt.Errorf("partner: propose %s: %w", typ, err)
		}
		if m, ok := res.(proto.Message); ok && result != nil && m != nil {
			proto.Merge(result, m)
		}
		return nil
	}
	_, id := p.Store.Leader()
	if id == "" {
		return ErrNoLeader
	}
	// A follower that has not heard from the leader lately is cut off from it (raft may
	// still name it): it must not lease over another path, so a minority side stops.
	silence := p.MaxLeaderSilence
	if silence <= 0 {
		silence = 2 * time.Second
	}
	if last := p.Store.Raft().LastContact(); time.Since(last) > silence {
		return fmt.Errorf("%w: no contact with the leader %s since %s", ErrNoLeader, id, last.UTC().Format(time.RFC3339))
	}
	n, ok, err := p.Store.Ledger().Node(id)
	if err != nil || !ok || n.GetApiAddr() == "" {
		return fmt.Errorf("%w: the leader %s has no known API address", ErrNoLeader, id)
	}
	payload, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("partner: encode %s: %w", typ, err)
	}
	c := partnerv1connect.NewPartnerNodeServiceClient(p.Client, "https://"+n.GetApiAddr())
	res, err := c.Forward(ctx, connect.NewRequest(&partnerv1.ForwardRequest{Type: int32(typ), Payload: payload}))
	if err != nil {
		return fmt.Errorf("partner: forward %s to the leader %s: %w", typ, id, err)
	}
	if result != nil {
		if err := proto.Unmarshal(res.Msg.GetResult(), result); err != nil {
			return fmt.Errorf("partner: decode the leader's %s result: %w", typ, err)
		}
	}
	return nil
}

// NodeService serves PartnerNodeService on the leader: it proposes what followers
// forward. The guard lets only node certificates reach it.
type NodeService struct {
	Store *store.Store
}

var _ partnerv1connect.PartnerNodeServiceHandler = (*NodeService)(nil)

// Forward proposes a forwarded partner command.
func (s *NodeService) Forward(ctx context.Context, req *connect.Request[partnerv1.ForwardRequest]) (*connect.Response[partnerv1.ForwardResponse], error) {
	typ := storev1.CommandType(req.Msg.GetType())
	mk, ok := forwardable[typ]
	if !ok {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("command type %d may not be forwarded", typ))
	}
	if !s.Store.IsLeader() {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("this node is not the leader"))
	}
	msg := mk()
	if err := proto.Unmarshal(req.Msg.GetPayload(), msg); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("decode %s: %w", typ, err))
	}
	res, err := s.Store.Propose(ctx, typ, msg)
	if low := (*diskguard.LowError)(nil); errors.As(err, &low) {
		return nil, connect.NewError(connect.CodeResourceExhausted, low) // refused, not proposed
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("propose %s: %w", typ, err))
	}
	out := &partnerv1.ForwardResponse{}
	if m, ok := res.(proto.Message); ok && m != nil {
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		out.Result = b
	}
	return connect.NewResponse(out), nil
}

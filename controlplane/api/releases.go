package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/internal/release"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// Releases: agent binaries an operator pushed (`crossdock releases push`). The bytes
// stay out of the raft log: the node that receives a push keeps the binary
// content-addressed in its data dir (Backend.ReleaseDir/<sha256 hex>) and commits only
// its metadata; agents download it over their mTLS link (DownloadRelease).

// DefaultMaxReleaseBytes bounds a pushed binary when Backend.MaxReleaseBytes is 0.
const DefaultMaxReleaseBytes = 512 << 20

// releaseChunk is the size of the pieces a binary is streamed in.
const releaseChunk = 1 << 20

var (
	releaseVersionRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)
	releasePlatformRe = regexp.MustCompile(`^[a-z0-9]{1,16}$`)
)

func (b *Backend) maxReleaseBytes() int64 {
	if b.MaxReleaseBytes > 0 {
		return b.MaxReleaseBytes
	}
	return DefaultMaxReleaseBytes
}

// PushRelease stores a binary as it streams in, hashing it, and commits its metadata.
// The guard checked the admin token before the first message was read, and the
// interceptor the role.
func (f *Fleet) PushRelease(ctx context.Context, stream *connect.ClientStream[adminv1.PushReleaseRequest]) (*connect.Response[adminv1.PushReleaseResponse], error) {
	if f.ReleaseDir == "" {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this node keeps no releases"))
	}
	if !f.Store.IsLeader() {
		return nil, f.notLeader()
	}
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty push: the first message names version, os, arch and size"))
	}
	head := stream.Msg()
	rel := &storev1.Release{Version: head.GetVersion(), Os: head.GetOs(), Arch: head.GetArch(), Size: head.GetSize()}
	switch {
	case !releaseVersionRe.MatchString(rel.GetVersion()):
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("version %q: 1-128 letters, digits, '.', '_', '+' or '-'", rel.GetVersion()))
	case !releasePlatformRe.MatchString(rel.GetOs()) || !releasePlatformRe.MatchString(rel.GetArch()):
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("platform %q/%q: os and arch as Go names them (linux/amd64)", rel.GetOs(), rel.GetArch()))
	case rel.GetSize() <= 0:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("size: the binary's size in bytes is required"))
	case rel.GetSize() > f.maxReleaseBytes():
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the binary has %d bytes, more than the %d this node accepts", rel.GetSize(), f.maxReleaseBytes()))
	}
	sum, _, err := release.Receive(f.ReleaseDir, rel.GetSize(), 0o600, func(w io.Writer) error {
		for first := true; first || stream.Receive(); first = false {
			if _, err := w.Write(stream.Msg().GetData()); err != nil {
				return err
			}
		}
		return stream.Err()
	})
	switch {
	case errors.Is(err, release.ErrMismatch):
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("the bytes sent are not the %d announced: %w", rel.GetSize(), err))
	case connect.CodeOf(err) != connect.CodeUnknown:
		return nil, err // the stream's own error
	case err != nil:
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("store the release: %w", err))
	}
	rel.Sha256 = sum
	rel.Actor, rel.At, rel.NodeId = actor(stream.RequestHeader()), timestamppb.Now(), f.Store.NodeID()
	res, err := f.Store.ProposeIgnorable(ctx, storev1.CommandType_COMMAND_TYPE_PUT_RELEASE, &storev1.PutRelease{Release: rel})
	if err != nil {
		return nil, f.storeError(err)
	}
	if r, _ := res.(*storev1.FleetCommandResult); r.GetError() != "" {
		return nil, connect.NewError(connect.CodeAlreadyExists, errors.New(r.GetError()))
	}
	f.Logger.Info("release pushed", "version", rel.GetVersion(), "os", rel.GetOs(), "arch", rel.GetArch(), "sha256", rel.GetSha256(), "size", rel.GetSize(), "actor", rel.GetActor(), "audit", true)
	return connect.NewResponse(&adminv1.PushReleaseResponse{Release: rel}), nil
}

func (b *Backend) releasePath(sum string) string { return filepath.Join(b.ReleaseDir, sum) }

// ListReleases lists the pushed releases.
func (f *Fleet) ListReleases(ctx context.Context, _ *connect.Request[adminv1.ListReleasesRequest]) (*connect.Response[adminv1.ListReleasesResponse], error) {
	if err := f.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	rs, err := f.Store.Ledger().Releases()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&adminv1.ListReleasesResponse{Releases: rs}), nil
}

// DownloadRelease streams a pushed binary to an enrolled, unrevoked agent, or to another
// node copying it. A node that does not have it yet fetches it first from the node it
// was pushed to.
func (u *Uplink) DownloadRelease(ctx context.Context, req *connect.Request[uplinkv1.DownloadReleaseRequest], stream *connect.ServerStream[uplinkv1.DownloadReleaseResponse]) error {
	caller := "node"
	if _, role, err := pki.PeerIdentity(PeerFrom(ctx).TLS); err != nil || role != pki.RoleServer {
		agentID, cert, err := agentIdentity(ctx)
		if err != nil {
			return err
		}
		rec, ok, err := u.Store.Ledger().Agent(agentID)
		if err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
		if err := admitAgent(rec, ok, agentID, cert); err != nil {
			return err
		}
		caller = agentID
	}
	sum := req.Msg.GetSha256()
	if !release.ValidSHA256(sum) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("sha256 %q: 64 lowercase hex digits", sum))
	}
	rel, ok, err := u.Store.Ledger().Release(sum)
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	if !ok || u.ReleaseDir == "" {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("no release with sha256 %s", sum))
	}
	file, err := os.Open(u.releasePath(sum))
	if errors.Is(err, os.ErrNotExist) && caller != "node" {
		if err = u.fetchRelease(ctx, rel); err == nil {
			file, err = os.Open(u.releasePath(sum))
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("release %s is not on node %s yet", sum, u.Store.NodeID()))
	}
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	defer file.Close()
	buf := make([]byte, releaseChunk)
	for {
		n, err := file.Read(buf)
		if n > 0 {
			if err := stream.Send(&uplinkv1.DownloadReleaseResponse{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			u.Logger.Info("release downloaded", "by", caller, "sha256", sum)
			return nil
		}
		if err != nil {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("read release %s: %w", sum, err))
		}
	}
}

// fetchRelease copies a release this node does not have from the node it was pushed to,
// over the cluster's mTLS, checking its size and SHA-256.
func (b *Backend) fetchRelease(ctx context.Context, rel *storev1.Release) error {
	if b.NodeClient == nil {
		return fmt.Errorf("release %s was pushed to node %s and this node cannot fetch it", rel.GetSha256(), rel.GetNodeId())
	}
	from, ok, err := b.Store.Ledger().Node(rel.GetNodeId())
	if err != nil {
		return err
	}
	if !ok || rel.GetNodeId() == b.Store.NodeID() {
		return fmt.Errorf("release %s: node %s that it was pushed to is not in the cluster (any more); push it again", rel.GetSha256(), rel.GetNodeId())
	}
	b.releaseFetch.Lock() // one copy at a time: a second caller then finds the file
	defer b.releaseFetch.Unlock()
	if _, err := os.Stat(b.releasePath(rel.GetSha256())); err == nil {
		return nil
	}
	client := uplinkv1connect.NewUplinkServiceClient(b.NodeClient, "https://"+from.GetApiAddr())
	_, err = release.Fetch(b.ReleaseDir, rel.GetSha256(), rel.GetSize(), 0o600, func(w io.Writer) error {
		stream, err := client.DownloadRelease(ctx, connect.NewRequest(&uplinkv1.DownloadReleaseRequest{Sha256: rel.GetSha256()}))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
			if _, err := w.Write(stream.Msg().GetData()); err != nil {
				return err
			}
		}
		return stream.Err()
	})
	if err != nil {
		return fmt.Errorf("copy release %s from node %s: %w", rel.GetSha256(), rel.GetNodeId(), err)
	}
	b.Logger.Info("release copied", "sha256", rel.GetSha256(), "version", rel.GetVersion(), "from", rel.GetNodeId())
	return nil
}

// ReleaseSyncEvery is how often a node copies the releases it does not have yet.
var ReleaseSyncEvery = 2 * time.Second

// SyncReleases copies every release this node does not have from the node it was
// pushed to, every ReleaseSyncEvery until ctx ends, so that any node that becomes leader
// can serve them.
func (b *Backend) SyncReleases(ctx context.Context) {
	if b.ReleaseDir == "" {
		return
	}
	t := time.NewTicker(ReleaseSyncEvery)
	defer t.Stop()
	failing := map[string]bool{} // logged once per failure streak
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rels, err := b.Store.Ledger().Releases()
		if err != nil {
			continue
		}
		for _, rel := range rels {
			if _, err := os.Stat(b.releasePath(rel.GetSha256())); err == nil {
				continue
			}
			if err := b.fetchRelease(ctx, rel); err != nil {
				if !failing[rel.GetSha256()] && ctx.Err() == nil {
					b.Logger.Warn("cannot copy a release to this node yet; retrying", "sha256", rel.GetSha256(), "err", err)
				}
				failing[rel.GetSha256()] = true
				continue
			}
			delete(failing, rel.GetSha256())
		}
	}
}

package ledger

import (
	"fmt"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Agent upgrades: the metadata of pushed agent binaries and the rollouts of them
// (docs/fleet.md). The binaries themselves stay out of the log.
//
//	fleet/release/ + sha256 hex -> Release
//	fleet/rollout/ + id         -> Rollout (ids sort by creation: zero-padded index)
var (
	prefixRelease = []byte("fleet/release/")
	prefixRollout = []byte("fleet/rollout/")
)

// applyPutRelease records a release; another binary for a version and platform already
// recorded is refused, so a version names one binary.
func applyPutRelease(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.PutRelease
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	r := p.GetRelease()
	if r.GetSha256() == "" || r.GetVersion() == "" || r.GetOs() == "" || r.GetArch() == "" {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("%v: release needs version, os, arch and sha256", ErrInvalidCommand)}, nil
	}
	var clash string
	err := scanProtos(tx.txn.Txn, prefixRelease, func() *storev1.Release { return &storev1.Release{} }, func(o *storev1.Release) {
		if o.GetVersion() == r.GetVersion() && o.GetOs() == r.GetOs() && o.GetArch() == r.GetArch() && o.GetSha256() != r.GetSha256() {
			clash = o.GetSha256()
		}
	})
	if err != nil {
		return nil, err
	}
	if clash != "" {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("release %s %s/%s exists with another binary (sha256 %s); push it under a new version", r.GetVersion(), r.GetOs(), r.GetArch(), clash)}, nil
	}
	if err := tx.setProto(cat(prefixRelease, []byte(r.GetSha256())), r); err != nil {
		return nil, err
	}
	return &storev1.FleetCommandResult{}, nil
}

// applyPutRollout stores a rollout whole.
func applyPutRollout(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.PutRollout
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	r := p.GetRollout()
	if r.GetId() == "" {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("%v: rollout needs an id", ErrInvalidCommand)}, nil
	}
	if err := tx.setProto(cat(prefixRollout, []byte(r.GetId())), r); err != nil {
		return nil, err
	}
	return &storev1.FleetCommandResult{}, nil
}

// Releases lists the pushed releases, by sha256.
func (l *Ledger) Releases() ([]*storev1.Release, error) {
	return listProtos(l, prefixRelease, func() *storev1.Release { return &storev1.Release{} })
}

// Release returns the release of a sha256.
func (l *Ledger) Release(sha256 string) (*storev1.Release, bool, error) {
	r := &storev1.Release{}
	ok, err := l.getProto(cat(prefixRelease, []byte(sha256)), r)
	return r, ok, err
}

// Rollouts lists the rollouts, oldest first.
func (l *Ledger) Rollouts() ([]*storev1.Rollout, error) {
	return listProtos(l, prefixRollout, func() *storev1.Rollout { return &storev1.Rollout{} })
}

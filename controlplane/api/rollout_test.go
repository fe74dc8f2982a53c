package api

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

func testRollout(n int, parallel uint32) *storev1.Rollout {
	r := &storev1.Rollout{Id: "r000001", Version: "v2", MaxParallel: parallel, DeadlineMs: 60_000, State: RolloutRunning}
	for i := range n {
		r.Agents = append(r.Agents, &storev1.RolloutAgent{AgentId: fmt.Sprintf("a%d", i), State: RolloutWaiting})
	}
	return r
}

func states(r *storev1.Rollout) map[string]int {
	m := map[string]int{}
	for _, a := range r.GetAgents() {
		m[a.GetState()]++
	}
	return m
}

// TestStepRolloutMaxParallel: never more than max_parallel agents upgrade at once; an
// agent back on the version frees its slot for the next; one already on it is skipped;
// the rollout is done when every agent is.
func TestStepRolloutMaxParallel(t *testing.T) {
	r := testRollout(5, 2)
	fleet := map[string]upgradeProgress{"a3": {version: "v2", connected: true}}
	progress := func(id string) upgradeProgress {
		if p, ok := fleet[id]; ok {
			return p
		}
		return upgradeProgress{version: "v1", connected: true}
	}
	now := time.Unix(1_800_000_000, 0)
	for step := 0; r.GetState() == RolloutRunning; step++ {
		if step > 10 {
			t.Fatalf("rollout not done after %d steps: %v", step, r.GetAgents())
		}
		stepRollout(r, now, progress)
		if n := states(r)[RolloutUpgrading]; n > 2 {
			t.Fatalf("step %d: %d agents upgrading, max_parallel 2: %v", step, n, r.GetAgents())
		}
		if step == 0 && states(r)[RolloutUpgrading] != 2 {
			t.Fatalf("first step: %v; want 2 upgrading", r.GetAgents())
		}
		// The first agent upgrading comes back on v2.
		for _, a := range r.GetAgents() {
			if a.GetState() == RolloutUpgrading {
				fleet[a.GetAgentId()] = upgradeProgress{version: "v2", connected: true}
				break
			}
		}
		now = now.Add(time.Second)
	}
	if s := states(r); r.GetState() != RolloutDone || s[RolloutDone] != 4 || s[RolloutSkipped] != 1 {
		t.Fatalf("rollout %s: %v; want done, 4 done and a3 skipped", r.GetState(), r.GetAgents())
	}
	for _, a := range r.GetAgents() {
		if a.GetState() == RolloutDone && a.GetFromVersion() != "v1" {
			t.Errorf("%s from %q; want v1", a.GetAgentId(), a.GetFromVersion())
		}
	}
}

// TestStepRolloutFailure: an agent that reports a rollback for this rollout, or is not
// back within its deadline and the grace, fails the rollout, and no other agent starts.
func TestStepRolloutFailure(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	t.Run("rolled back", func(t *testing.T) {
		r := testRollout(3, 1)
		rep := &uplinkv1.UpgradeReport{RolloutId: "r000001", Version: "v2", State: UpgradeRolledBack, Reason: "v2 exited"}
		stale := &uplinkv1.UpgradeReport{RolloutId: "r000000", Version: "v2", State: UpgradeRolledBack}
		p := upgradeProgress{version: "v1", connected: true, report: stale}
		stepRollout(r, now, func(string) upgradeProgress { return p })
		stepRollout(r, now, func(string) upgradeProgress { return p }) // another rollout's report changes nothing
		if r.GetState() != RolloutRunning || r.GetAgents()[0].GetState() != RolloutUpgrading {
			t.Fatalf("%v", r)
		}
		p.report = rep
		stepRollout(r, now, func(string) upgradeProgress { return p })
		if r.GetState() != RolloutFailed || r.GetReason() != "agent a0: rolled_back: v2 exited" || states(r)[RolloutWaiting] != 2 {
			t.Fatalf("%v", r)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		r := testRollout(2, 1)
		p := func(string) upgradeProgress { return upgradeProgress{version: "v1"} }
		stepRollout(r, now, p)
		r.GetAgents()[0].StartedAt = timestamppb.New(now)
		stepRollout(r, now.Add(time.Minute+RolloutGrace), p)
		if r.GetState() != RolloutRunning {
			t.Fatalf("failed at the deadline plus grace: %v", r)
		}
		stepRollout(r, now.Add(time.Minute+RolloutGrace+time.Millisecond), p)
		if r.GetState() != RolloutFailed || states(r)[RolloutWaiting] != 1 {
			t.Fatalf("%v", r)
		}
	})
}

package ledger

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func hashOf(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func putToken(t *testing.T, lg *raftLog, l *Ledger, tok *storev1.PutToken) any {
	t.Helper()
	return lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_TOKEN, tok))
}

func consume(t *testing.T, lg *raftLog, l *Ledger, c *storev1.ConsumeToken) *storev1.ConsumeTokenResult {
	t.Helper()
	r, ok := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, c)).(*storev1.ConsumeTokenResult)
	if !ok {
		t.Fatal("consume result is not a *ConsumeTokenResult")
	}
	return r
}

func TestConsumeToken(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	for _, tok := range []*storev1.PutToken{
		{Id: "named", SecretSha256: hashOf("s1"), Kind: "agent", CreatedAt: ts(t0), ExpiresAt: ts(t0.Add(time.Hour)), AgentName: "dc-east"},
		{Id: "anon", SecretSha256: hashOf("s2"), Kind: "agent", CreatedAt: ts(t0), ExpiresAt: ts(t0.Add(time.Hour))},
		{Id: "asked", SecretSha256: hashOf("s3"), Kind: "agent", CreatedAt: ts(t0), ExpiresAt: ts(t0.Add(time.Hour))},
		{Id: "short", SecretSha256: hashOf("s4"), Kind: "agent", CreatedAt: ts(t0), ExpiresAt: ts(t0.Add(time.Minute))},
	} {
		if res := putToken(t, lg, l, tok); res != nil {
			t.Fatalf("PUT_TOKEN %s = %v", tok.GetId(), res)
		}
	}
	atMin := func(m int64) *storev1.ConsumeToken {
		return &storev1.ConsumeToken{At: ts(t0.Add(timeMinutes(m)))}
	}
	with := func(c *storev1.ConsumeToken, id, secret, name string) *storev1.ConsumeToken {
		c.Id, c.SecretSha256, c.AgentName = id, hashOf(secret), name
		return c
	}
	cases := []struct {
		name      string
		c         *storev1.ConsumeToken
		wantAgent string
		wantErr   string
		sentinel  error
	}{
		{"good: the token's agent name wins", with(atMin(1), "named", "s1", "asked-for"), "dc-east", "", nil},
		{"reused", with(atMin(2), "named", "s1", ""), "", "enrollment token already used by agent dc-east at 2025-03-01T08:01:00Z", ErrTokenUsed},
		{"good: no names gives agent-<id>", with(atMin(2), "anon", "s2", ""), "agent-anon", "", nil},
		{"good: the name asked for", with(atMin(2), "asked", "s3", "dc-west"), "dc-west", "", nil},
		{"wrong secret", with(atMin(1), "short", "nope", ""), "", "enrollment token secret does not match", ErrTokenSecret},
		{"expired", with(atMin(5), "short", "s4", ""), "", "enrollment token expired at 2025-03-01T08:01:00Z", ErrTokenExpired},
		{"expired exactly at expiry", with(atMin(1), "short", "s4", ""), "", "enrollment token expired at 2025-03-01T08:01:00Z", ErrTokenExpired},
		{"not found", with(atMin(1), "forged", "s1", ""), "", "enrollment token not found (it may have been forged or created on another cluster)", ErrTokenNotFound},
		{"wrong secret on a used token says only that", with(atMin(3), "named", "nope", ""), "", "enrollment token secret does not match", ErrTokenSecret},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := l.AppliedIndex()
			r := consume(t, lg, l, tc.c)
			if r.GetAgentId() != tc.wantAgent || r.GetError() != tc.wantErr {
				t.Fatalf("result = %v; want agent %q error %q", r, tc.wantAgent, tc.wantErr)
			}
			if l.AppliedIndex() != before+1 {
				t.Error("a refusal did not advance the applied index")
			}
			err := ConsumeTokenError(r)
			if tc.sentinel == nil && err != nil || tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Errorf("ConsumeTokenError = %v, want %v", err, tc.sentinel)
			}
		})
	}

	rec, ok, err := l.Token("named")
	if err != nil || !ok || !rec.GetUsed() || rec.GetUsedBy() != "dc-east" || !rec.GetUsedAt().AsTime().Equal(t0.Add(timeMinutes(1))) {
		t.Errorf("Token(named) = %v, %v, %v", rec, ok, err)
	}
	if rec, _, _ := l.Token("short"); rec.GetUsed() {
		t.Error("a refused token was marked used")
	}
	agents, _ := l.Agents()
	var ids []string
	for _, a := range agents {
		ids = append(ids, a.GetId())
	}
	if len(ids) != 3 || ids[0] != "agent-anon" || ids[1] != "dc-east" || ids[2] != "dc-west" {
		t.Errorf("agents = %v", ids)
	}
	testSnapshotRestore(t, l)
}

func timeMinutes(m int64) time.Duration { return time.Duration(m) * time.Minute }

// TestReenrollNeedsReplace: a token for a name that is enrolled is refused unless it
// was made to replace it; the replacing enrollment is a new incarnation whose outbox
// seqs start again (committed seq 0) and keeps the agent's counters.
func TestReenrollNeedsReplace(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	putToken(t, lg, l, &storev1.PutToken{Id: "t1", SecretSha256: hashOf("s"), AgentName: "dc-east"})
	consume(t, lg, l, &storev1.ConsumeToken{Id: "t1", SecretSha256: hashOf("s"), At: ts(at(2))})
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, &storev1.IngestBatch{
		AgentId: "dc-east", Incarnation: 1, Events: []*storev1.AgentEvent{agentEvent(1, "e1"), agentEvent(2, "e2")},
	}))
	putToken(t, lg, l, &storev1.PutToken{Id: "t2", SecretSha256: hashOf("s"), AgentName: "dc-east"})
	res, _ := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, &storev1.ConsumeToken{Id: "t2", SecretSha256: hashOf("s"), At: ts(at(4))})).(*storev1.ConsumeTokenResult)
	if err := ConsumeTokenError(res); !errors.Is(err, ErrAgentEnrolled) || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("re-enrollment without replace = %v, want ErrAgentEnrolled naming --replace", err)
	}
	if rec, _, _ := l.Token("t2"); rec.GetUsed() {
		t.Error("the refused token was used up")
	}
	putToken(t, lg, l, &storev1.PutToken{Id: "t3", SecretSha256: hashOf("s"), AgentName: "dc-east", Replace: true})
	consume(t, lg, l, &storev1.ConsumeToken{Id: "t3", SecretSha256: hashOf("s"), At: ts(at(5))})
	rec, _, _ := l.Agent("dc-east")
	want := &storev1.AgentRecord{Id: "dc-east", EnrolledAt: ts(at(5)), CommittedSeq: 0, EventsCommitted: 2, Incarnation: 2, Replacements: 1}
	if !proto.Equal(rec, want) {
		t.Errorf("agent after re-enroll = %v, want %v", rec, want)
	}
}

func TestPutTokenAdminTokenAndCA(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	putToken(t, lg, l, &storev1.PutToken{Id: "t1", SecretSha256: hashOf("s")})
	consume(t, lg, l, &storev1.ConsumeToken{Id: "t1", SecretSha256: hashOf("s"), At: ts(at(2))})
	// Putting the id again must not reset the used token.
	res := putToken(t, lg, l, &storev1.PutToken{Id: "t1", SecretSha256: hashOf("s")})
	if err, _ := res.(error); !errors.Is(err, ErrTokenExists) {
		t.Errorf("second PUT_TOKEN = %v, want ErrTokenExists", res)
	}
	if rec, _, _ := l.Token("t1"); !rec.GetUsed() {
		t.Error("second PUT_TOKEN reset the token")
	}
	if res := putToken(t, lg, l, &storev1.PutToken{}); !errors.Is(res.(error), ErrInvalidCommand) {
		t.Errorf("PUT_TOKEN without id = %v", res)
	}

	if _, ok, _ := l.AdminTokenHash("adm1"); ok {
		t.Error("admin token found before PUT_ADMIN_TOKEN")
	}
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_ADMIN_TOKEN, &storev1.PutAdminToken{Id: "adm1", SecretSha256: hashOf("a"), CreatedAt: ts(t0)}))
	if h, ok, err := l.AdminTokenHash("adm1"); err != nil || !ok || string(h) != string(hashOf("a")) {
		t.Errorf("AdminTokenHash = %x, %v, %v", h, ok, err)
	}

	if _, _, ok, _ := l.CA(); ok {
		t.Error("CA found before PUT_CA")
	}
	if res := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_CA, &storev1.PutCA{CertPem: "c1", KeyPem: "k1"})); res != nil {
		t.Errorf("first PUT_CA = %v", res)
	}
	res = lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_CA, &storev1.PutCA{CertPem: "c2", KeyPem: "k2"}))
	if err, _ := res.(error); !errors.Is(err, ErrCAExists) {
		t.Errorf("second PUT_CA = %v, want ErrCAExists", res)
	}
	if c, k, ok, err := l.CA(); c != "c1" || k != "k1" || !ok || err != nil {
		t.Errorf("CA = %q, %q, %v, %v", c, k, ok, err)
	}
	testSnapshotRestore(t, l)
}

// Command ingestbench measures events/s from agent publish to raft commit at a one-node
// control plane, over HTTP/3 (QUIC) and over HTTP/2, in one process on loopback.
//
//	go run ./bench/ingestbench -events 200000 -runs 3
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/demo/sample"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func main() {
	events := flag.Int("events", 200000, "events per run")
	runs := flag.Int("runs", 3, "runs per transport; the median is reported")
	batch := flag.Int("publish-batch", 1000, "events per publish call")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	for _, tr := range []struct {
		name   string
		noQUIC bool
	}{{"h3", false}, {"h2", true}} {
		var rates []float64
		for range *runs {
			r, err := once(*events, *batch, tr.noQUIC)
			if err != nil {
				fmt.Fprintln(os.Stderr, "ingestbench:", err)
				os.Exit(1)
			}
			rates = append(rates, r)
		}
		sort.Float64s(rates)
		fmt.Printf("ingest transport=%s events=%d runs=%d median_events_per_s=%.0f min=%.0f max=%.0f\n",
			tr.name, *events, *runs, rates[len(rates)/2], rates[0], rates[len(rates)-1])
	}
}

// once publishes n events into a fresh agent and control plane and returns events/s
// from the first publish to the last commit.
func once(n, batch int, noQUIC bool) (float64, error) {
	dir, err := os.MkdirTemp("", "ingestbench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := controlplane.New(ctx, controlplane.Config{NodeID: "bench", DataDir: filepath.Join(dir, "cp"), Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0", Bootstrap: true})
	if err != nil {
		return 0, err
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	defer func() { cancel(); <-srvDone }()

	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		return 0, err
	}
	admin, closeAdmin, err := cc.AdminClient()
	if err != nil {
		return 0, err
	}
	defer closeAdmin()
	tok, err := admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(time.Minute), AgentName: "bench"}))
	if err != nil {
		return 0, err
	}
	ag, err := agent.New(ctx, agent.Config{DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.Addr()}, EnrollToken: tok.Msg.GetToken(), LocalAddr: "-", DisableQUIC: noQUIC})
	if err != nil {
		return 0, err
	}
	agDone := make(chan error, 1)
	actx, acancel := context.WithCancel(ctx)
	go func() { agDone <- ag.Run(actx) }()
	defer func() { acancel(); <-agDone }()

	gen := sample.NewInventory(1, sample.DefaultWarehouses, 2000, time.Now())
	evs := make([]*eventv1.Event, n)
	for i := range evs {
		evs[i] = gen.Next()
		sample.Pad(evs[i], 256)
	}
	ledger := srv.Store().Ledger()
	start := time.Now()
	pubErr := make(chan error, 1)
	go func() {
		for i := 0; i < n; i += batch {
			if _, err := ag.Publish(ctx, "bench", evs[i:min(i+batch, n)]); err != nil {
				pubErr <- err
				return
			}
		}
		pubErr <- nil
	}()
	deadline := time.Now().Add(10 * time.Minute)
	for ledger.LastSeq() < uint64(n) {
		select {
		case err := <-pubErr:
			if err != nil {
				return 0, fmt.Errorf("publish: %w", err)
			}
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("only %d of %d committed after 10 minutes", ledger.LastSeq(), n)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/agent/localapi"
	"github.com/crossdock/crossdock/internal/canonical"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// maxLine bounds one JSONL line.
const maxLine = 1 << 20

// readEvents parses a JSONL file of events (protojson, one per line; blank lines and lines
// starting with # are skipped). Every bad line is reported with its number.
func readEvents(r io.Reader) ([]*eventv1.Event, []error) {
	var evs []*eventv1.Event
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ev := &eventv1.Event{}
		if err := protojson.Unmarshal([]byte(line), ev); err != nil {
			errs = append(errs, fmt.Errorf("line %d: not an event: %w", n, err))
			continue
		}
		canonical.Normalize(ev)
		if err := canonical.Validate(ev); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read: %w", err))
	}
	return evs, errs
}

func newPublishCmd() *cobra.Command {
	var file, local, connector string
	var batch int
	var skipInvalid bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "publish --file events.jsonl",
		Short: "Hand events to the local agent; returns once they are durable in its outbox",
		Long: `Publish reads events as JSON lines (the protojson form of crossdock.event.v1.Event) and
hands them to an agent's local API. Each event gets a deterministic id from its source
position (or, without one, from a hash of its content), so publishing the same file
again adds nothing: the control plane commits every event once.

The file is checked first; a bad line is reported with its number and nothing is sent
unless --skip-invalid is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return fmt.Errorf("--file: %w", err)
				}
				defer f.Close()
				in = f
			}
			evs, errs := readEvents(in)
			if len(errs) > 0 {
				for i, err := range errs {
					if i == 20 {
						cmd.PrintErrf("... and %d more\n", len(errs)-20)
						break
					}
					cmd.PrintErrln(err)
				}
				if !skipInvalid {
					return fmt.Errorf("%d invalid lines in %s; nothing was published (fix them, or pass --skip-invalid)", len(errs), file)
				}
			}
			if batch <= 0 || batch > localapi.MaxPublishEvents {
				return fmt.Errorf("--batch: want 1 to %d", localapi.MaxPublishEvents)
			}
			if timeout <= 0 {
				return errors.New("--timeout: want a positive duration, e.g. 30s or 5m")
			}
			// One deadline for the whole command; the agent hears it with each call and
			// answers resource_exhausted a little before it when its outbox stays full.
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			client := localClient(local)
			var first, last uint64
			for i, calls := 0, 0; i < len(evs); i, calls = i+batch, calls+1 {
				chunk := evs[i:min(i+batch, len(evs))]
				res, err := client.Publish(ctx, connect.NewRequest(&agentv1.PublishRequest{Events: chunk, Connector: connector}))
				if err != nil {
					return publishError(err, local, timeout, i, len(chunk), len(evs), calls, first, last)
				}
				if first == 0 {
					first = res.Msg.GetFirstSeq()
				}
				last = res.Msg.GetLastSeq()
			}
			cmd.PrintErrf("published %d events (outbox seq %d-%d); they stream to the control plane now\n", len(evs), first, last)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "-", "JSONL file of events ('-' for standard input)")
	f.StringVar(&local, "agent", envOr("CROSSDOCK_AGENT_ADDR", "127.0.0.1:7480"), "agent local API address")
	f.StringVar(&connector, "connector", "publish", "connector name recorded as the events' source")
	f.IntVar(&batch, "batch", 1000, "events per call to the agent")
	f.BoolVar(&skipInvalid, "skip-invalid", false, "publish the valid lines even if some are invalid")
	f.DurationVar(&timeout, "timeout", time.Minute, "give up after this long (e.g. when the agent's outbox stays full); the events of the calls that completed stay durable")
	return cmd
}

// publishError says which call failed, why, and what is durable: the events of the
// calls before it (the agent fsynced them), none of the failed call's.
func publishError(err error, agentAddr string, timeout time.Duration, done, n, total, calls int, first, last uint64) error {
	durable := "none of the events is durable"
	if done > 0 {
		durable = fmt.Sprintf("the first %d events (%d calls, outbox seq %d-%d) are durable; the rest are not", done, calls, first, last)
	}
	why := ""
	switch connect.CodeOf(err) {
	case connect.CodeResourceExhausted:
		why = fmt.Sprintf(" (the agent's outbox stayed full for the --timeout of %s: check that its uplink reaches the control plane with `crossdock agent status`)", timeout)
	case connect.CodeFailedPrecondition:
		why = " (the agent's outbox is damaged: stop the agent and run `crossdock agent repair`, docs/operations.md)"
	case connect.CodeDeadlineExceeded:
		why = fmt.Sprintf(" (no answer within the --timeout of %s)", timeout)
	}
	return fmt.Errorf("publish events %d-%d of %d to the agent at %s: %w%s; %s",
		done+1, done+n, total, agentAddr, err, why, durable)
}

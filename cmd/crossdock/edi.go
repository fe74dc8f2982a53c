package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/internal/edi"
	"github.com/crossdock/crossdock/internal/x12"
	ediconn "github.com/crossdock/crossdock/plugins/edi"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

func newEDICmd() *cobra.Command {
	cmd := &cobra.Command{Use: "edi", Short: "Read X12 files and the EDI connector's interchange history"}
	cmd.AddCommand(newEDIParseCmd(), newEDIValidateCmd(), newEDILsCmd(), newEDIChainCmd())
	return cmd
}

// ediParse is the JSON of `edi parse`.
type ediParse struct {
	File         string           `json:"file"`
	Interchanges []ediInterchange `json:"interchanges"`
	Error        string           `json:"error,omitempty"`
}

type ediInterchange struct {
	FilePos    int               `json:"filePos"`
	Header     x12.Header        `json:"header"`
	Delimiters map[string]string `json:"delimiters"`
	Status     string            `json:"status"` // TA1 status: A, E or R
	Error      string            `json:"error,omitempty"`
	Noted      []string          `json:"noted,omitempty"`
	Warnings   []string          `json:"warnings,omitempty"`
	Groups     []ediGroup        `json:"groups"`
}

type ediGroup struct {
	FilePos      int      `json:"filePos"`
	FunctionalID string   `json:"functionalId"`
	AppSender    string   `json:"appSender"`
	AppReceiver  string   `json:"appReceiver"`
	Date         string   `json:"date"`
	Time         string   `json:"time"`
	Control      string   `json:"control"`
	Version      string   `json:"version"`
	Status       string   `json:"status"` // AK9: A, E, P or R
	Error        string   `json:"error,omitempty"`
	Sets         []ediSet `json:"sets"`
}

type ediSet struct {
	ID       string     `json:"id"`
	Control  string     `json:"control"`
	Status   string     `json:"status"` // A, E or R
	Codes    []string   `json:"codes,omitempty"`
	Errors   []string   `json:"errors,omitempty"`
	Segments [][]string `json:"segments,omitempty"`
}

func printable(b byte) string {
	if b == 0 {
		return ""
	}
	if b < 0x20 || b == 0x7f {
		return fmt.Sprintf("0x%02X", b)
	}
	return string(b)
}

// readX12 reads a file with the streaming reader, mapping 850s as the connector does
// when mapping is set, and calls done with each finished interchange and its sets.
func readX12(path string, mapping bool, keepSegments bool, done func(ic *x12.Interchange, sets map[*x12.Group][]ediSet) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	sets := map[*x12.Group][]ediSet{}
	return x12.Read(bufio.NewReaderSize(f, 1<<20), x12.Handler{
		Set: func(ic *x12.Interchange, g *x12.Group, s *x12.Set) error {
			if mapping && s.ID == "850" {
				_, errs := edi.Map850(s, edi.Options{})
				edi.Apply(g, s, errs)
			}
			es := ediSet{ID: s.ID, Control: s.Control, Status: s.Result.Status, Codes: s.Result.Codes}
			for _, e := range s.Result.Errors {
				msg := e.Error()
				for _, el := range e.Elements {
					msg += fmt.Sprintf("; element %d: %s [AK403 %s] %q", el.Pos, el.Reason, el.Code, el.Data)
				}
				es.Errors = append(es.Errors, msg)
			}
			if keepSegments {
				for _, seg := range s.Segments {
					row := []string{seg.ID}
					for _, el := range seg.Elements {
						row = append(row, el.String())
					}
					es.Segments = append(es.Segments, row)
				}
			}
			sets[g] = append(sets[g], es)
			return nil
		},
		InterchangeEnd: func(ic *x12.Interchange) error {
			err := done(ic, sets)
			clear(sets)
			return err
		},
	})
}

func toJSON(ic *x12.Interchange, sets map[*x12.Group][]ediSet) ediInterchange {
	d := ic.Delimiters
	out := ediInterchange{FilePos: ic.FilePos, Header: ic.Header, Groups: []ediGroup{},
		Delimiters: map[string]string{"element": printable(d.Element), "component": printable(d.Component), "repetition": printable(d.Repetition), "segment": printable(d.Segment)}}
	out.Status, _ = x12.InterchangeStatus(ic)
	if ic.Err != nil {
		out.Error = ic.Err.Error()
	}
	for _, n := range ic.Noted {
		out.Noted = append(out.Noted, n.Error())
	}
	for _, w := range ic.Warnings {
		out.Warnings = append(out.Warnings, fmt.Sprintf("segment %d: %s", w.FilePos, w.Message))
	}
	for _, g := range ic.Groups {
		eg := ediGroup{FilePos: g.FilePos, FunctionalID: g.FunctionalID, AppSender: g.AppSender, AppReceiver: g.AppReceiver,
			Date: g.Date, Time: g.Time, Control: g.Control, Version: g.Version, Sets: sets[g]}
		eg.Status, _ = x12.GroupStatus(g)
		if g.Err != nil {
			eg.Error = g.Err.Error()
		}
		if eg.Sets == nil {
			eg.Sets = []ediSet{}
		}
		out.Groups = append(out.Groups, eg)
	}
	return out
}

func newEDIParseCmd() *cobra.Command {
	var noSegments bool
	cmd := &cobra.Command{
		Use:   "parse FILE",
		Short: "Print an X12 file as JSON: envelopes, groups, sets and segments, with errors",
		Long: `Print an X12 file as JSON: each interchange's header, delimiters and verdict, its
groups and transaction sets with their verdicts (A accepted, E with errors, R rejected),
the errors with their segment and element positions, and every segment's elements.
The file is read as a stream; nothing is sent anywhere. Exits 1 when the file cannot be
read as X12 at all (the "error" field says where and why).`,
		Example: `  crossdock edi parse po.x12
  crossdock edi parse --no-segments big.x12`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := ediParse{File: args[0], Interchanges: []ediInterchange{}}
			err := readX12(args[0], false, !noSegments, func(ic *x12.Interchange, sets map[*x12.Group][]ediSet) error {
				out.Interchanges = append(out.Interchanges, toJSON(ic, sets))
				return nil
			})
			if err != nil {
				out.Error = err.Error()
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if encErr := enc.Encode(out); encErr != nil {
				return fmt.Errorf("encode output: %w", encErr)
			}
			if err != nil {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&noSegments, "no-segments", false, "leave the segments out (envelopes and verdicts only)")
	return cmd
}

func newEDIValidateCmd() *cobra.Command {
	var showAck bool
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check an X12 file as the EDI connector would: envelopes, syntax and the 850 mapping",
		Long: `Check an X12 file as the EDI connector would: envelopes and counts, segment syntax,
and the mapping of each 850 to an order. One line per interchange, group and set with
its verdict, and the reason for each error. --ack prints the 997/999 (and TA1) the
connector would send back. Exits 0 when everything is accepted (A or E), 2 when
something is rejected, 1 when the file cannot be read as X12.`,
		Example: `  crossdock edi validate po.x12
  crossdock edi validate --ack po.x12`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			rejected := false
			var acks bytes.Buffer
			err := readX12(args[0], true, false, func(ic *x12.Interchange, sets map[*x12.Group][]ediSet) error {
				j := toJSON(ic, sets)
				h := ic.Header
				fmt.Fprintf(w, "interchange %s from %s:%s to %s:%s (segment %d): %s\n", h.Control, strings.TrimSpace(h.SenderQual), strings.TrimSpace(h.SenderID),
					strings.TrimSpace(h.ReceiverQual), strings.TrimSpace(h.ReceiverID), ic.FilePos, verdict(j.Status))
				rejected = rejected || j.Status == x12.StatusRejected
				if j.Error != "" {
					fmt.Fprintf(w, "  error: %s\n", j.Error)
				}
				for _, n := range j.Noted {
					fmt.Fprintf(w, "  noted: %s\n", n)
				}
				for _, wn := range j.Warnings {
					fmt.Fprintf(w, "  warning: %s\n", wn)
				}
				for _, g := range j.Groups {
					fmt.Fprintf(w, "  group %s %s (%s, segment %d): %s\n", g.FunctionalID, g.Control, g.Version, g.FilePos, verdict(g.Status))
					rejected = rejected || g.Status == x12.StatusRejected || g.Status == "P"
					if g.Error != "" {
						fmt.Fprintf(w, "    error: %s\n", g.Error)
					}
					for _, s := range g.Sets {
						codes := ""
						if len(s.Codes) > 0 {
							codes = " [AK5 codes " + strings.Join(s.Codes, ",") + "]"
						}
						fmt.Fprintf(w, "    set %s %s: %s%s\n", s.ID, s.Control, verdict(s.Status), codes)
						rejected = rejected || s.Status == x12.StatusRejected
						for _, e := range s.Errors {
							fmt.Fprintf(w, "      %s\n", e)
						}
					}
				}
				if showAck {
					if ack := x12.Acknowledge(ic, x12.AckOptions{Now: time.Now(), Delimiters: ic.Delimiters}); ack != nil {
						if err := x12.NewWriter(&acks, withSuffix(ic.Delimiters), &x12.Sequence{}).Write(ack); err != nil {
							return fmt.Errorf("build acknowledgement: %w", err)
						}
					}
				}
				return nil
			})
			if showAck && acks.Len() > 0 {
				fmt.Fprintf(w, "\nacknowledgement (control numbers from 1; the connector uses the partner's):\n%s", acks.String())
			}
			if err != nil {
				return fmt.Errorf("%s cannot be read as X12: %w", args[0], err)
			}
			if rejected {
				return &exitError{code: 2}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&showAck, "ack", false, "print the 997/999/TA1 the connector would send back")
	return cmd
}

func withSuffix(d x12.Delimiters) x12.Delimiters {
	if d.Segment != '\n' && d.Segment != '\r' {
		d.Suffix = "\n"
	} else {
		d.Suffix = ""
	}
	return d
}

func verdict(s string) string {
	switch s {
	case x12.StatusAccepted:
		return "accepted (A)"
	case x12.StatusWithErrors:
		return "accepted with errors (E)"
	case x12.StatusRejected:
		return "rejected (R)"
	case "P":
		return "partially accepted (P)"
	}
	return s
}

func newEDILsCmd() *cobra.Command {
	var partner, stateDir, po, state, direction string
	cmd := &cobra.Command{
		Use:   "ls --partner P [--state-dir DIR]",
		Short: "List a trading partner's interchanges received and sent, with their acknowledgement state",
		Long: `List the interchanges the EDI connector received from and sent to a trading partner:
direction, ISA13, file, time, status, and for each functional group its sets (with the
PO number) and the acknowledgement state: for inbound groups the 997/999 we sent (A,
E, P, R), for outbound groups the partner's (A, E, P, R, "pending" within the
profile's acks.overdueAfter, then "overdue"). --po shows one order's groups (850, 855,
856, 810).

Without --state-dir it asks the control plane (EDIService), which holds what every
agent's EDI connectors published (edi.interchange events), newest first; --state and
--direction filter there. With --state-dir it reads the connector's own journal in
its state_dir instead (run it on the agent's host; it also lists duplicates refused).`,
		Example: `  crossdock edi ls --partner bigbox
  crossdock edi ls --partner bigbox --state overdue
  crossdock edi ls --partner bigbox --state-dir /var/lib/crossdock/edi --po 4500098765 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if stateDir == "" {
				return ediLsRemote(cmd, partner, po, state, direction)
			}
			if state != "" || direction != "" {
				return fmt.Errorf("--state and --direction filter the control plane's list; drop --state-dir to use them")
			}
			entries, err := ediconn.ReadJournal(stateDir, partner)
			if err != nil {
				return err
			}
			now := time.Now()
			type row struct {
				Direction, Control, File, At, Status, Group, Ack, Sets string
			}
			var rows []row
			for _, e := range entries {
				if len(e.Groups) == 0 {
					rows = append(rows, row{e.Direction, e.Control, e.File, e.At.UTC().Format(time.RFC3339), e.Status, "-", "-", "-"})
				}
				for _, g := range e.Groups {
					var sets []string
					match := po == ""
					for _, s := range g.Sets {
						txt := s.ID + " " + s.Control
						if s.PO != "" {
							txt += " PO " + s.PO
						}
						if s.Status != "" {
							txt += " " + s.Status
						}
						sets = append(sets, txt)
						match = match || s.PO == po
					}
					if !match {
						continue
					}
					ack := g.Ack
					if e.Direction == "out" {
						ack = g.AckState(now)
						if e.TA1 != "" {
							ack += ", TA1 " + e.TA1
						}
					} else if ack != "" {
						ack = g.AckKind + " sent " + ack
						if e.AckControl != "" {
							ack += " (ISA13 " + e.AckControl + ")"
						}
					}
					rows = append(rows, row{e.Direction, e.Control, e.File, e.At.UTC().Format(time.RFC3339), e.Status, g.FunctionalID + " " + g.Control, dash(ack), strings.Join(sets, ", ")})
				}
			}
			if g.output != "table" {
				b, err := json.MarshalIndent(entries, "", "  ")
				if err != nil {
					return fmt.Errorf("encode output: %w", err)
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return err
			}
			tw := newTable(cmd.OutOrStdout(), "DIR", "ISA13", "FILE", "AT", "STATUS", "GROUP", "ACK", "SETS")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Direction, r.Control, r.File, r.At, r.Status, r.Group, r.Ack, r.Sets)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&partner, "partner", "", "the trading partner (its profile's partner name)")
	f.StringVar(&stateDir, "state-dir", "", "read the edi connector's journal in this state_dir instead of asking the control plane")
	f.StringVar(&po, "po", "", "only the groups carrying this purchase order number (or, without --state-dir, Crossdock order id)")
	f.StringVar(&state, "state", "", "only interchanges in this state: A, E, P, R, pending, overdue, rejected (control plane only)")
	f.StringVar(&direction, "direction", "", "only in or out (control plane only)")
	_ = cmd.MarkFlagRequired("partner")
	return cmd
}

func ediClient() (adminv1connect.EDIServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, addr, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return adminv1connect.NewEDIServiceClient(hc, addr), nil
}

func ediLsRemote(cmd *cobra.Command, partner, po, state, direction string) error {
	client, err := ediClient()
	if err != nil {
		return err
	}
	var all []*adminv1.EDIInterchange
	token := ""
	for {
		res, err := client.ListInterchanges(cmd.Context(), connect.NewRequest(&adminv1.ListInterchangesRequest{
			Partner: partner, Order: po, State: state, Direction: direction, PageSize: 500, PageToken: token}))
		if err != nil {
			return fmt.Errorf("edi ls: %w", err)
		}
		all = append(all, res.Msg.GetInterchanges()...)
		if token = res.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if g.output != "table" {
		return printMessage(cmd.OutOrStdout(), &adminv1.ListInterchangesResponse{Interchanges: all})
	}
	tw := newTable(cmd.OutOrStdout(), "DIR", "ISA13", "FILE", "AT", "STATUS", "STATE", "GROUP", "ACK", "SETS")
	for _, x := range all {
		ic := x.GetInterchange()
		at := ""
		if ic.GetAt() != nil {
			at = ic.GetAt().AsTime().UTC().Format(time.RFC3339)
		}
		if len(ic.GetGroups()) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t-\t%s\t-\n", ic.GetDirection(), ic.GetControl(), ic.GetFile(), at, ic.GetStatus(), x.GetState(), dash(ic.GetTa1()))
		}
		for i, gr := range ic.GetGroups() {
			var sets []string
			for _, s := range gr.GetSets() {
				txt := s.GetId() + " " + s.GetControl()
				if s.GetPurchaseOrderNumber() != "" {
					txt += " PO " + s.GetPurchaseOrderNumber()
				}
				if s.GetStatus() != "" {
					txt += " " + s.GetStatus()
				}
				sets = append(sets, txt)
			}
			ack := ""
			if i < len(x.GetGroupStates()) {
				ack = x.GetGroupStates()[i]
			}
			if ic.GetDirection() == "out" && ic.GetTa1() != "" {
				ack += ", TA1 " + ic.GetTa1()
			} else if ic.GetDirection() == "in" && ack != "" {
				ack = gr.GetAckKind() + " sent " + ack
				if ic.GetAckControl() != "" {
					ack += " (ISA13 " + ic.GetAckControl() + ")"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ic.GetDirection(), ic.GetControl(), ic.GetFile(), at, ic.GetStatus(), x.GetState(),
				gr.GetFunctionalId()+" "+gr.GetControl(), dash(ack), strings.Join(sets, ", "))
		}
	}
	return tw.Flush()
}

func newEDIChainCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "chain ORDER",
		Short: "Show an order's X12 chain (850, 997/999, 855, 856, 810) with acknowledgement states",
		Long: `Show the X12 transaction sets of one order, from the control plane: the 850 received
and the 997/999 we sent for it, then each 855, 856 and 810 sent with the partner's
acknowledgement state (A, E, P, R, pending, overdue) and times. ORDER is the Crossdock
order id (ord_...) or the purchase order number.`,
		Example: `  crossdock edi chain 4500098765
  crossdock edi chain ord_e4e8bd207590475dfd1e -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := ediClient()
			if err != nil {
				return err
			}
			res, err := client.GetOrderEDI(cmd.Context(), connect.NewRequest(&adminv1.GetOrderEDIRequest{Order: args[0]}))
			if err != nil {
				return fmt.Errorf("edi chain: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			if len(res.Msg.GetSteps()) == 0 {
				return fmt.Errorf("edi chain: no X12 set of order %q is known to the control plane (check the id, or that the EDI connector runs)", args[0])
			}
			return printEDIChain(cmd.OutOrStdout(), "", res.Msg.GetSteps())
		},
	}
}

// printEDIChain prints an order's X12 chain as a table, each line after indent.
func printEDIChain(w io.Writer, indent string, steps []*adminv1.EDIChainStep) error {
	ts := func(t interface{ AsTime() time.Time }, ok bool) string {
		if !ok {
			return "-"
		}
		return t.AsTime().UTC().Format(time.RFC3339)
	}
	tw := newTable(w, indent+"SET", "DIR", "PARTNER", "ISA13", "GS06", "PO", "STATE", "AT", "ACK AT", "ACK DUE")
	for _, s := range steps {
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", indent, s.GetSet(), s.GetDirection(), s.GetPartner(), s.GetInterchange(), s.GetGroupControl(),
			dash(s.GetPurchaseOrderNumber()), dash(s.GetState()), ts(s.GetAt(), s.GetAt() != nil), ts(s.GetAckAt(), s.GetAckAt() != nil), ts(s.GetAckDue(), s.GetAckDue() != nil))
	}
	return tw.Flush()
}

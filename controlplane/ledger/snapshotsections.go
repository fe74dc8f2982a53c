package ledger

import (
	"bytes"
	"io"
	"sort"
)

// SnapshotSection is what a snapshot holds under one key prefix.
type SnapshotSection struct {
	// Prefix is the key prefix: up to and including the key's first '/' ("l/"), its
	// second under "fleet/" ("fleet/audit/"), or the whole key when it has no '/' in
	// its first bytes ("ca").
	Prefix string `json:"prefix"`
	// Name says what the section holds; "" for a prefix this build does not know.
	Name string `json:"name,omitempty"`
	// Records is the number of records under the prefix.
	Records uint64 `json:"records"`
	// Bytes is their keys and values as framed in the stream, before compression.
	Bytes uint64 `json:"bytes"`
}

// sectionNames says what each key prefix holds (keys.go and the files that define
// their own prefixes).
var sectionNames = map[string]string{
	"l/":             "the event log, in chunks of events",
	"lc/":            "compacted base: the newest event of each key pruned from the log",
	"k/":             "key index",
	"t/":             "type index",
	"r/":             "id run blocks: the event ids recognised as duplicates",
	"rd/":            "id run directories",
	"rt/":            "id run commit times",
	"ih/":            "long event ids",
	"m/":             "ledger metadata",
	"ca":             "cluster CA",
	"a/":             "agents",
	"tok/":           "enrollment tokens",
	"adm/":           "admin tokens",
	"n/":             "nodes",
	"dc/":            "delivery cursors",
	"dl/":            "dead letters",
	"dlr/":           "dead letters being retried",
	"rp/":            "replays",
	"doc/":           "applied documents",
	"doch/":          "document history",
	"pk/":            "partner keys",
	"pq/":            "partner quota leases",
	"pu/":            "partner usage by day",
	"pr/":            "partner refusals",
	"as/":            "alert state",
	"ah/":            "alert history",
	"fleet/audit/":   "admin audit trail",
	"fleet/cred/":    "admin credentials",
	"fleet/labels/":  "agent labels",
	"fleet/release/": "releases",
	"fleet/rollout/": "rollouts",
}

// maxPrefix bounds how far into a key sectionOf looks for a '/'.
const maxPrefix = 16

// sectionOf is the section a key belongs to (SnapshotSection.Prefix).
func sectionOf(k []byte) []byte {
	i := bytes.IndexByte(k[:min(len(k), maxPrefix)], '/')
	if i < 0 {
		return k[:min(len(k), maxPrefix)]
	}
	if string(k[:i+1]) == "fleet/" {
		rest := k[i+1:]
		if j := bytes.IndexByte(rest[:min(len(rest), maxPrefix)], '/'); j >= 0 {
			return k[:i+2+j]
		}
	}
	return k[:i+1]
}

// InspectSnapshotSections is InspectSnapshot that also tallies the records and bytes
// under each key prefix, sorted by prefix. Nothing is tallied from a stream that fails
// verification: the error is InspectSnapshot's.
func InspectSnapshotSections(r io.Reader) (SnapshotInfo, []SnapshotSection, error) {
	tally := map[string]*SnapshotSection{}
	idx, ca, err := readSnapshotCA(r, func(k, v []byte) error {
		p := sectionOf(k)
		s := tally[string(p)]
		if s == nil {
			s = &SnapshotSection{Prefix: string(p), Name: sectionNames[string(p)]}
			tally[s.Prefix] = s
		}
		s.Records++
		s.Bytes += uint64(8 + len(k) + len(v))
		return nil
	})
	if err != nil {
		return SnapshotInfo{}, nil, err
	}
	out := make([]SnapshotSection, 0, len(tally))
	for _, s := range tally {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix < out[j].Prefix })
	return snapshotInfo(idx, ca), out, nil
}

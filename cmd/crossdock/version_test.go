package main

import (
	"runtime/debug"
	"testing"
)

// TestBuildFrom checks where `crossdock version` takes the commit and date from: the
// -ldflags values when set, else the VCS stamp of runtime/debug.ReadBuildInfo, else
// "unknown".
func TestBuildFrom(t *testing.T) {
	stamp := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "8b1e4c0ffee"}, {Key: "vcs.time", Value: "2026-11-30T10:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	stamp.Main.Version = "(devel)"
	for _, tc := range []struct {
		name                       string
		bi                         *debug.BuildInfo
		ver, com, dat              string
		wantVer, wantCom, wantDate string
		wantModified               bool
	}{
		{"stamp only", stamp, "dev", "", "", "dev", "8b1e4c0ffee", "2026-11-30T10:00:00Z", true},
		{"ldflags win", stamp, "v1.2.3", "abc", "2026-12-01T00:00:00Z", "v1.2.3", "abc", "2026-12-01T00:00:00Z", false},
		{"nothing", nil, "dev", "", "", "dev", "unknown", "unknown", false},
		{"module version", &debug.BuildInfo{Main: debug.Module{Version: "v0.9.0"}}, "dev", "", "", "v0.9.0", "unknown", "unknown", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := buildFrom(tc.bi, tc.ver, tc.com, tc.dat)
			if b.Version != tc.wantVer || b.Commit != tc.wantCom || b.Date != tc.wantDate || b.Modified != tc.wantModified {
				t.Fatalf("got version %q commit %q date %q modified %v; want %q %q %q %v",
					b.Version, b.Commit, b.Date, b.Modified, tc.wantVer, tc.wantCom, tc.wantDate, tc.wantModified)
			}
			if b.LedgerLayout != 7 || b.OutboxLayout != 2 || b.Go == "" {
				t.Fatalf("layouts %d/%d, go %q: want ledger 7, outbox 2", b.LedgerLayout, b.OutboxLayout, b.Go)
			}
		})
	}
}

package testsvc

import (
	"testing"
)

func TestStartTryton(t *testing.T) {
	tr := StartTryton(t)
	var prefs map[string]any
	tr.Into(t, &prefs, "res.user", "get_preferences", true)
	if got, ok := prefs["company"].(float64); !ok || int64(got) != tr.Company {
		t.Fatalf("admin's company = %v, want %d", prefs["company"], tr.Company)
	}
	var mods []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	tr.Into(t, &mods, "ir.module", "search_read", []any{[]any{"name", "in", []string{"sale", "stock"}}}, 0, nil, nil, []string{"name", "state"})
	if len(mods) != 2 || mods[0].State != "activated" || mods[1].State != "activated" {
		t.Fatalf("modules = %+v, want sale and stock activated", mods)
	}
}

// Package labels is the agent label rule shared by the agent, the control plane and the
// CLI: labels given at enrollment (`crossdock agent --label site=east`), set by
// `crossdock agents label`, and matched by AgentConfig selectors and
// `crossdock agents ls --selector`.
package labels

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// MaxLabels bounds the labels of one agent.
const MaxLabels = 32

var (
	keyRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9_./-]{0,62})$`)
	valueRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{0,63}$`)
)

// CheckKey reports whether k is a label key: 1-63 characters of a-z, 0-9, '_', '.',
// '/' or '-', starting with a letter or digit.
func CheckKey(k string) error {
	if !keyRE.MatchString(k) {
		return fmt.Errorf("label key %q must be 1-63 characters of a-z, 0-9, '_', '.', '/' or '-', starting with a letter or digit", k)
	}
	return nil
}

// CheckValue reports whether v is a label value: at most 63 characters of A-Z, a-z,
// 0-9, '_', '.' or '-'.
func CheckValue(k, v string) error {
	if !valueRE.MatchString(v) {
		return fmt.Errorf("label %s: value %q must be at most 63 characters of A-Z, a-z, 0-9, '_', '.' or '-'", k, v)
	}
	return nil
}

// Check validates a set of labels.
func Check(m map[string]string) error {
	if len(m) > MaxLabels {
		return fmt.Errorf("%d labels, at most %d", len(m), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := CheckKey(k); err != nil {
			return err
		}
		if err := CheckValue(k, m[k]); err != nil {
			return err
		}
	}
	return nil
}

// Parse reads labels written as "k=v" terms, each argument holding one term or several
// separated by commas ("site=east,erp=tryton"). A key given twice is refused.
func Parse(terms ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, arg := range terms {
		if strings.TrimSpace(arg) == "" {
			continue
		}
		for _, t := range strings.Split(arg, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(t), "=")
			if !ok {
				return nil, fmt.Errorf("label %q: want key=value (site=east)", t)
			}
			if err := CheckKey(k); err != nil {
				return nil, err
			}
			if err := CheckValue(k, v); err != nil {
				return nil, err
			}
			if _, dup := out[k]; dup {
				return nil, fmt.Errorf("label %s given twice", k)
			}
			out[k] = v
		}
	}
	if len(out) > MaxLabels {
		return nil, fmt.Errorf("%d labels, at most %d", len(out), MaxLabels)
	}
	return out, nil
}

// Matches reports whether labels has every key of selector with the same value. An
// empty selector matches everything.
func Matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// String writes labels as "k=v,k=v", keys sorted; "" when there are none.
func String(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

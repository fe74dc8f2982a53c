package console

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxKeyLen bounds a business key's name and value (the ledger indexes up to 1 KiB).
const MaxKeyLen = 1024

// ParseKeys reads business keys given as name=value words ("sku=A-100",
// "order=SO-1 partner=acme"): what `crossdock trace` takes as arguments and the
// console's search box takes as text (split on spaces and commas).
func ParseKeys(words []string) (map[string]string, error) {
	keys := map[string]string{}
	for _, w := range words {
		for _, kv := range strings.FieldsFunc(w, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' || r == '\r' }) {
			name, value, ok := strings.Cut(kv, "=")
			name, value = strings.TrimSpace(name), strings.TrimSpace(value)
			switch {
			case !ok || name == "" || value == "":
				return nil, fmt.Errorf("%q: want name=value, e.g. sku=A-100 or order=SO-1", kv)
			case len(name) > MaxKeyLen || len(value) > MaxKeyLen:
				return nil, fmt.Errorf("%.40q...: a key name or value is longer than %d bytes", kv, MaxKeyLen)
			case !utf8.ValidString(name) || !utf8.ValidString(value):
				return nil, fmt.Errorf("%q: not valid UTF-8", kv)
			}
			if old, dup := keys[name]; dup && old != value {
				return nil, fmt.Errorf("key %q given twice (%q and %q): an event has one value per key", name, old, value)
			}
			keys[name] = value
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("give at least one business key as name=value, e.g. sku=A-100 or order=SO-1")
	}
	return keys, nil
}

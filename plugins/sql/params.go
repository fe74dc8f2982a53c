package sql

import (
	"fmt"
	"strings"
)

// namedStatement is a statement with :name parameters rewritten to the driver's
// placeholders.
type namedStatement struct {
	Query string
	// Args lists the parameter name bound to each placeholder, in order.
	Args []string
}

func isNameStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isNameChar(c byte) bool  { return isNameStart(c) || c >= '0' && c <= '9' }

// parseNamed rewrites :name parameters to placeholders. Quoted strings ('...', "...",
// `...`), comments (-- and /* */) and PostgreSQL casts (::type) are left alone. With
// reuse (PostgreSQL's $n) a name used twice binds one placeholder.
func parseNamed(stmt string, placeholder func(int) string, reuse bool) (namedStatement, error) {
	var out strings.Builder
	var ns namedStatement
	index := map[string]int{}
	for i := 0; i < len(stmt); {
		c := stmt[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for {
				k := strings.IndexByte(stmt[j:], c)
				if k < 0 {
					return ns, fmt.Errorf("unterminated %c quote at offset %d", c, i)
				}
				j += k + 1
				if j < len(stmt) && stmt[j] == c { // doubled quote: escaped
					j++
					continue
				}
				break
			}
			out.WriteString(stmt[i:j])
			i = j
		case c == '-' && strings.HasPrefix(stmt[i:], "--"):
			j := strings.IndexByte(stmt[i:], '\n')
			if j < 0 {
				j = len(stmt) - i
			}
			out.WriteString(stmt[i : i+j])
			i += j
		case c == '/' && strings.HasPrefix(stmt[i:], "/*"):
			j := strings.Index(stmt[i+2:], "*/")
			if j < 0 {
				return ns, fmt.Errorf("unterminated /* comment at offset %d", i)
			}
			out.WriteString(stmt[i : i+2+j+2])
			i += 2 + j + 2
		case c == ':' && i+1 < len(stmt) && stmt[i+1] == ':':
			out.WriteString("::")
			i += 2
		case c == ':' && i+1 < len(stmt) && isNameStart(stmt[i+1]):
			j := i + 1
			for j < len(stmt) && isNameChar(stmt[j]) {
				j++
			}
			name := stmt[i+1 : j]
			if n, ok := index[name]; ok && reuse {
				out.WriteString(placeholder(n))
			} else {
				ns.Args = append(ns.Args, name)
				index[name] = len(ns.Args)
				out.WriteString(placeholder(len(ns.Args)))
			}
			i = j
		default:
			out.WriteByte(c)
			i++
		}
	}
	ns.Query = out.String()
	return ns, nil
}

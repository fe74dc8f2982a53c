package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/agent/config"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/labels"
)

// KindAgentConfig is the kind of an agent's central configuration: its connectors and
// the agent settings that may be managed centrally, for the agents its selector picks
// (docs/fleet.md). The control plane sends it down each selected agent's uplink stream.
const KindAgentConfig Kind = "AgentConfig"

// AgentConfigSpec is the spec of an AgentConfig. Agent and Connectors have the shape of
// the agent's config file (agent/config); they are kept as written.
type AgentConfigSpec struct {
	Selector   AgentSelector  `json:"selector"`
	Agent      map[string]any `json:"agent,omitempty"`
	Connectors []any          `json:"connectors,omitempty"`
}

// AgentSelector picks agents by name or by labels given at enrollment. An agent named
// in Agents is selected whatever its labels; otherwise every entry of Labels must match.
type AgentSelector struct {
	Agents []string          `json:"agents,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// centralAgentSettings are the agent settings an AgentConfig may set; the others
// (name, data_dir, servers, enroll_token, local_addr, no_quic, quota) are how the agent
// finds the control plane and its data, so they stay on the agent's host.
var centralAgentSettings = []string{"batch", "window", "memory_limit"}

// secretKeyRE names settings that hold a secret: their value must be a reference.
var secretKeyRE = regexp.MustCompile(`(?i)(password|passwd|secret|token|api_?key|private_?key|credential)`)

// refOnlyRE is a value that is exactly one ${env:...} or ${file:...} reference.
var refOnlyRE = regexp.MustCompile(`^\$\{(env|file):[^}]+\}$`)

// userinfoRE finds a password in a URL's user info ("scheme://user:PASSWORD@").
var userinfoRE = regexp.MustCompile(`://[^/@:\s]*:([^@\s]+)@`)

// parseAgentConfig decodes and validates an AgentConfig spec.
func parseAgentConfig(p *problems, spec map[string]any) *AgentConfigSpec {
	s := &AgentConfigSpec{}
	for _, k := range sortedKeys(spec) {
		switch k {
		case "selector":
			decodeInto(p, "spec.selector", spec[k], reflect.ValueOf(&s.Selector).Elem())
		case "agent":
			m, ok := spec[k].(map[string]any)
			if !ok && spec[k] != nil {
				p.add("spec.agent", "want a mapping, got %s", show(spec[k]))
				continue
			}
			s.Agent = m
		case "connectors":
			l, ok := spec[k].([]any)
			if !ok && spec[k] != nil {
				p.add("spec.connectors", "want a list, got %s", show(spec[k]))
				continue
			}
			s.Connectors = l
		default:
			p.add("spec."+k, "unknown field (known: selector, agent, connectors)")
		}
	}
	if len(p.errs) > 0 {
		return s
	}
	validateAgentConfig(p, s)
	return s
}

func validateAgentConfig(p *problems, s *AgentConfigSpec) {
	if len(s.Selector.Agents) == 0 && len(s.Selector.Labels) == 0 {
		p.add("spec.selector", "required: agents (names) or labels (site: east), or both")
	}
	for i, a := range s.Selector.Agents {
		if !canonical.ValidName(a) {
			p.add(fmt.Sprintf("spec.selector.agents[%d]", i), "%q is not an agent name", a)
		} else if slices.Index(s.Selector.Agents, a) < i {
			p.add(fmt.Sprintf("spec.selector.agents[%d]", i), "%q listed twice", a)
		}
	}
	for _, k := range sortedKeys(s.Selector.Labels) {
		if err := labels.CheckKey(k); err != nil {
			p.add("spec.selector.labels."+k, "%v", err)
		} else if err := labels.CheckValue(k, s.Selector.Labels[k]); err != nil {
			p.add("spec.selector.labels."+k, "%v", err)
		}
	}
	for _, k := range sortedKeys(s.Agent) {
		if !slices.Contains(centralAgentSettings, k) {
			p.add("spec.agent."+k, "set on the agent's host only (its config file or flags); an AgentConfig may set %s", strings.Join(centralAgentSettings, ", "))
		}
	}
	for i, c := range s.Connectors {
		if m, ok := c.(map[string]any); ok {
			checkLiteralSecrets(p, fmt.Sprintf("spec.connectors[%d].settings", i), m["settings"], "")
		}
	}
	if len(p.errs) > 0 {
		return
	}
	// The agent's own parser, with references left unresolved: the agent resolves
	// them on its host; here only their form is checked.
	y, err := s.AgentYAML()
	if err != nil {
		p.add("spec", "%v", err)
		return
	}
	if _, err := config.Parse(y, checkOnlyEnv); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			p.add(join("spec", ce.Path), "%s", ce.Reason)
			return
		}
		p.add("spec", "%v", err)
	}
}

// checkOnlyEnv resolves every reference to a placeholder, so that config.Parse checks
// a reference's form without its value.
var checkOnlyEnv = config.Env{
	LookupEnv: func(string) (string, bool) { return "x", true },
	ReadFile:  func(string) ([]byte, error) { return []byte("x"), nil },
}

// checkLiteralSecrets refuses a secret written as a value: a setting whose name says
// it is a secret must be one ${env:...} or ${file:...} reference, and a URL must not
// carry a literal password. The agent resolves references on its host, so the control
// plane never stores or sends a secret value.
func checkLiteralSecrets(p *problems, path string, v any, key string) {
	switch t := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(t) {
			checkLiteralSecrets(p, path+"."+k, t[k], k)
		}
	case []any:
		for i, e := range t {
			checkLiteralSecrets(p, fmt.Sprintf("%s[%d]", path, i), e, key)
		}
	case string:
		if secretKeyRE.MatchString(key) && t != "" && !refOnlyRE.MatchString(t) {
			p.add(path, "a literal secret: write ${env:NAME} or ${file:/path}, resolved by the agent on its host (the control plane never holds secret values)")
			return
		}
		if m := userinfoRE.FindStringSubmatch(t); m != nil && !refOnlyRE.MatchString(m[1]) {
			p.add(path, "the URL carries a literal password: write it as ${env:NAME} or ${file:/path} (user:${env:DB_PASSWORD}@host)")
		}
	}
}

// AgentYAML is the configuration the agent receives: the spec's agent and connectors
// sections as agent config YAML.
func (s *AgentConfigSpec) AgentYAML() ([]byte, error) {
	m := map[string]any{}
	if len(s.Agent) > 0 {
		m["agent"] = s.Agent
	}
	if s.Connectors != nil {
		m["connectors"] = s.Connectors
	}
	j, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode agent config: %w", err)
	}
	return yaml.JSONToYAML(j)
}

// Selects reports whether the spec selects the agent, and how specifically: 2 by name,
// 1 by labels, 0 not at all.
func (s *AgentConfigSpec) Selects(agent string, agentLabels map[string]string) int {
	if slices.Contains(s.Selector.Agents, agent) {
		return 2
	}
	if len(s.Selector.Labels) > 0 && labels.Matches(s.Selector.Labels, agentLabels) {
		return 1
	}
	return 0
}

func agentConfigSummary(s *AgentConfigSpec) string {
	var sel []string
	if len(s.Selector.Agents) > 0 {
		sel = append(sel, "agents="+strings.Join(s.Selector.Agents, ","))
	}
	if len(s.Selector.Labels) > 0 {
		sel = append(sel, "labels="+labels.String(s.Selector.Labels))
	}
	var names []string
	for _, c := range s.Connectors {
		if m, ok := c.(map[string]any); ok {
			n, _ := m["name"].(string)
			names = append(names, n)
		}
	}
	return strings.Join(sel, " ") + fmt.Sprintf(" connectors=%s", strings.Join(names, ","))
}

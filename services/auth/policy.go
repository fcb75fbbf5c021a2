package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/keel-registry/keel/internal/repopattern"
)

// Anonymous is the subject of a caller without credentials in policy rules.
// A rule for it opts repositories into anonymous pulls; no user or token
// may carry the name.
const Anonymous = "anonymous"

// The actions of a policy rule.
const (
	// ActionPull reads manifests, blobs, tags and referrers.
	ActionPull = "pull"
	// ActionPush writes blobs, manifests and tags.
	ActionPush = "push"
	// ActionDelete deletes manifests, tags and blobs.
	ActionDelete = "delete"
	// ActionCatalog lists every repository; the rule's repositories do not
	// apply to it.
	ActionCatalog = "catalog"
)

// actions is a set of policy actions.
type actions uint8

const (
	canPull actions = 1 << iota
	canPush
	canDelete
	canCatalog

	canRepository = canPull | canPush | canDelete
	canAll        = canRepository | canCatalog
)

// actionBits maps action names to their bit.
var actionBits = map[string]actions{
	ActionPull: canPull, ActionPush: canPush, ActionDelete: canDelete, ActionCatalog: canCatalog,
}

// has reports whether every action of b is in a.
func (a actions) has(b actions) bool { return a&b == b }

// Rule grants actions on repositories to subjects.
type Rule struct {
	// Subjects are user names, login-token subjects, or Anonymous.
	Subjects []string `yaml:"subjects" json:"subjects"`
	// Repositories are repository patterns (see repopattern). Required
	// unless the only action is catalog.
	Repositories []string `yaml:"repositories" json:"repositories"`
	// Actions are pull, push, delete and catalog. A rule for Anonymous may
	// only pull.
	Actions []string `yaml:"actions" json:"actions"`
}

// Policy is the per-repository permissions: every rule that names a
// subject and matches a repository adds its actions; nothing else is
// allowed.
type Policy struct {
	// Rules are the policy's rules.
	Rules []Rule `yaml:"rules" json:"rules"`
}

// maxPolicySize bounds a policy file.
const maxPolicySize = 1 << 20

// LoadPolicy reads a policy file (KEEL_AUTH_POLICY), YAML or JSON.
//
// The auth service reads it once, at start: a changed policy takes a
// restart of every auth replica, and until then (plus the gateways' cache
// TTL) the old rules apply. Reloading it on change is not done.
func LoadPolicy(path string) (Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return Policy{}, fmt.Errorf("auth: policy: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return Policy{}, fmt.Errorf("auth: policy %s: %w", path, err)
	}
	if len(raw) > maxPolicySize {
		return Policy{}, fmt.Errorf("auth: policy %s is larger than %d bytes", path, maxPolicySize)
	}
	p, err := ParsePolicy(raw)
	if err != nil {
		return Policy{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return p, nil
}

// ParsePolicy reads a policy document, YAML or JSON, refusing unknown
// fields and invalid rules.
func ParsePolicy(raw []byte) (Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return Policy{}, fmt.Errorf("auth: policy: %w", err)
	}
	if _, err := compilePolicy(p); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// rule is a checked Rule.
type rule struct {
	subjects map[string]bool
	patterns []repopattern.Pattern
	actions  actions
}

// policy is a checked Policy.
type policy struct {
	rules []rule
}

func compilePolicy(p Policy) (policy, error) {
	var out policy
	var errs []error
	for i, r := range p.Rules {
		c, err := compileRule(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("auth: policy rule %d: %w", i+1, err))
			continue
		}
		out.rules = append(out.rules, c)
	}
	return out, errors.Join(errs...)
}

func compileRule(r Rule) (rule, error) {
	c := rule{subjects: map[string]bool{}}
	if len(r.Subjects) == 0 {
		return rule{}, errors.New("no subjects")
	}
	for _, s := range r.Subjects {
		if s == "" || strings.ContainsAny(s, ":\x00") {
			return rule{}, fmt.Errorf("subject %q is empty or holds ':'", s)
		}
		c.subjects[s] = true
	}
	if len(r.Actions) == 0 {
		return rule{}, errors.New("no actions")
	}
	for _, a := range r.Actions {
		bit, ok := actionBits[a]
		if !ok {
			return rule{}, fmt.Errorf("action %q is not pull, push, delete or catalog", a)
		}
		c.actions |= bit
	}
	if c.subjects[Anonymous] && !canPull.has(c.actions) {
		return rule{}, errors.New("a rule for anonymous may only pull")
	}
	if len(r.Repositories) == 0 && c.actions&canRepository != 0 {
		return rule{}, errors.New("no repositories")
	}
	for _, s := range r.Repositories {
		p, err := repopattern.Compile(s)
		if err != nil {
			return rule{}, err
		}
		c.patterns = append(c.patterns, p)
	}
	return c, nil
}

// add appends rules.
func (p *policy) add(rules ...rule) { p.rules = append(p.rules, rules...) }

// names reports whether any rule names subject.
func (p policy) names(subject string) bool {
	for _, r := range p.rules {
		if r.subjects[subject] {
			return true
		}
	}
	return false
}

// allowed returns the actions subject may take on repository name.
func (p policy) allowed(subject, name string) actions {
	var out actions
	for _, r := range p.rules {
		if !r.subjects[subject] || r.actions&canRepository&^out == 0 {
			continue
		}
		for _, pat := range r.patterns {
			if pat.Match(name) {
				out |= r.actions & canRepository
				break
			}
		}
	}
	return out
}

// catalog reports whether subject may list the catalog.
func (p policy) catalog(subject string) bool {
	for _, r := range p.rules {
		if r.subjects[subject] && r.actions.has(canCatalog) {
			return true
		}
	}
	return false
}

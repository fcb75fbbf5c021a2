// Package repopattern matches repository names against the glob patterns
// of keel's permissions: "team/app" names one repository, "team/*" every
// repository one level below team, "team/**" team and every repository
// anywhere below it, and "**" every repository.
package repopattern

import (
	"fmt"
	"strings"
)

// maxLength bounds a pattern, as reference.MaxNameLength bounds a name.
const maxLength = 255

// Pattern is a compiled repository pattern. The zero value matches
// nothing.
type Pattern struct {
	text string
	// components is text split at '/', once, for Match.
	components []string
}

// Compile checks a pattern. A pattern is a repository name whose
// components may be "*" (any one component, or any run of characters
// within one when mixed with other characters, as in "app-*") and "**"
// (any number of components, including none, but only as a whole
// component). Anything else a repository name may not hold is refused, so
// that no pattern can reach "..", an empty component or an upper-case name.
func Compile(s string) (Pattern, error) {
	if s == "" || len(s) > maxLength {
		return Pattern{}, fmt.Errorf("repopattern: pattern %.64q is empty or too long", s)
	}
	components := strings.Split(s, "/")
	for _, c := range components {
		if err := checkComponent(c); err != nil {
			return Pattern{}, fmt.Errorf("repopattern: pattern %.64q: %w", s, err)
		}
	}
	return Pattern{text: s, components: components}, nil
}

// MustCompile is Compile for patterns known to be valid; it panics on an
// invalid one.
func MustCompile(s string) Pattern {
	p, err := Compile(s)
	if err != nil {
		panic(err)
	}
	return p
}

func checkComponent(c string) error {
	if c == "" {
		return fmt.Errorf("empty component")
	}
	if c == "**" {
		return nil
	}
	if strings.Contains(c, "**") {
		return fmt.Errorf("component %q: ** must be a whole component", c)
	}
	for _, r := range c {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r == '.' || r == '_' || r == '-' || r == '*':
		default:
			return fmt.Errorf("component %q: character %q is not allowed", c, r)
		}
	}
	if strings.Contains(c, "..") {
		return fmt.Errorf("component %q: '..' is not allowed", c)
	}
	return nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.text }

// Match reports whether the repository name matches p. The name is not
// validated here: callers check it with reference.ValidateName first.
func (p Pattern) Match(name string) bool {
	if p.text == "" {
		return false
	}
	return matchComponents(p.components, strings.Split(name, "/"))
}

// matchComponents matches pattern components against name components.
func matchComponents(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(name); i++ {
				if matchComponents(rest, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 || !matchComponent(pat[0], name[0]) {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}

// matchComponent matches one component with '*' wildcards against one name
// component.
func matchComponent(pat, s string) bool {
	star := strings.IndexByte(pat, '*')
	if star < 0 {
		return pat == s
	}
	prefix, rest := pat[:star], pat[star+1:]
	if !strings.HasPrefix(s, prefix) {
		return false
	}
	s = s[len(prefix):]
	for i := 0; i <= len(s); i++ {
		if matchComponent(rest, s[i:]) {
			return true
		}
	}
	return false
}

package schema

import (
	"strings"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		cmp  int
		ok   bool
	}{
		{"2.19.3", "2.19.3", 0, true},
		{"2.19.3", "2.31.0", -1, true},
		{"2.31.0", "2.9.1", 1, true},
		{"2.20.0-dev", "2.20.0", 0, true},
		{"1.0", "1.0.0", 0, true},
		{"1.1", "1.0", 1, true},
		{"x", "2.0", 0, false},
	} {
		cmp, ok := CompareVersions(c.a, c.b)
		if cmp != c.cmp || ok != c.ok {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, %v", c.a, c.b, cmp, ok, c.cmp, c.ok)
		}
	}
}

// The target's TimescaleDB for a source at 2.19.3: the installed one, else the
// server's default, else the source's; never an older version nor another major.
func TestPlanTimescaleDB(t *testing.T) {
	for _, c := range []struct {
		name                string
		installed, def      string
		available           []string
		version             string
		upgrade, installedV bool
		problem             []string // words the problem must hold, "" when none
	}{
		{"same version offered", "", "2.19.3", []string{"2.19.3"}, "2.19.3", false, false, nil},
		{"newer default", "", "2.31.0", []string{"2.31.0"}, "2.31.0", true, false, nil},
		{"newer installed", "2.31.0", "2.31.0", []string{"2.31.0"}, "2.31.0", true, true, nil},
		{"same installed", "2.19.3", "2.31.0", []string{"2.19.3", "2.31.0"}, "2.19.3", false, true, nil},
		{"older default, source offered", "", "2.18.0", []string{"2.18.0", "2.19.3"}, "2.19.3", false, false, nil},
		{"older default only", "", "2.18.0", []string{"2.18.0"}, "", false, false, []string{"2.19.3", "offers only 2.18.0", "older"}},
		{"older installed", "2.18.0", "2.31.0", []string{"2.31.0"}, "", false, true, []string{"2.19.3", "has 2.18.0 installed", "older"}},
		{"another major", "", "3.0.0", []string{"3.0.0"}, "", false, false, []string{"2.19.3", "3.0.0", "another major"}},
		{"none", "", "", nil, "", false, false, []string{"2.19.3", "does not offer TimescaleDB"}},
	} {
		p := PlanTimescaleDB("2.19.3", c.installed, c.def, c.available)
		if p.Version != c.version || p.Upgrade() != c.upgrade || p.Installed != c.installedV || (p.Problem == "") != (c.problem == nil) {
			t.Errorf("%s: %+v (upgrade %v); want version %q, upgrade %v, installed %v, problem %v", c.name, p, p.Upgrade(), c.version, c.upgrade, c.installedV, c.problem)
			continue
		}
		for _, w := range c.problem {
			if !strings.Contains(p.Problem, w) {
				t.Errorf("%s: %q does not say %q", c.name, p.Problem, w)
			}
		}
	}
}

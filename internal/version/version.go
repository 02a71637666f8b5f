// Package version says which build of tsmigrate runs, from what the Go toolchain
// recorded in the binary (runtime/debug.ReadBuildInfo): the module's version and the
// VCS revision it was built from. The CLI prints it; the journal records it, so that a
// refusal can say which tsmigrate wrote state this one cannot read.
package version

import (
	"runtime/debug"
	"strings"
	"sync"
)

// Info is one build's version.
type Info struct {
	// Version is the module's: a release (v1.2.3) when installed with go install
	// ...@v1.2.3, a pseudo-version (v0.0.0-20261201120000-1a2b3c4d5e6f, +dirty when
	// modified) for go build in a checkout, "(devel)" when the toolchain recorded none
	// (go test, go run, -buildvcs=false).
	Version string
	// Revision is the VCS revision (vcs.revision) the build was made from, "" if none
	// was recorded; Modified says the work tree had changes (vcs.modified).
	Revision string
	Modified bool
}

// String is the version as one line shows it: "v1.2.3", or with the revision when the
// version does not already name it: "(devel) 1a2b3c4d5e6f (modified)".
func (i Info) String() string {
	s := i.Version
	if s == "" {
		s = "(devel)"
	}
	if rev := short(i.Revision); rev != "" && !strings.Contains(s, rev) {
		s += " " + rev
		if i.Modified {
			s += " (modified)"
		}
	}
	return s
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// FromBuildInfo reads an Info from what the toolchain recorded.
func FromBuildInfo(bi *debug.BuildInfo) Info {
	var i Info
	if bi == nil {
		return i
	}
	i.Version = bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// Get is this binary's version.
var Get = sync.OnceValue(func() Info {
	bi, _ := debug.ReadBuildInfo()
	return FromBuildInfo(bi)
})

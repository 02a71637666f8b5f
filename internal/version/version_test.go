package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	const rev = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, c := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"go install @v1.2.3", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"go build at a tag", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs("false")}, "v1.2.3 1a2b3c4d5e6f"},
		{"go build in a checkout", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261201120000-1a2b3c4d5e6f+dirty"}, Settings: vcs("true")},
			"v0.0.0-20261201120000-1a2b3c4d5e6f+dirty"},
		{"-buildvcs with no version", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")}, "(devel) 1a2b3c4d5e6f (modified)"},
		{"nothing recorded", &debug.BuildInfo{}, "(devel)"},
		{"no build info", nil, "(devel)"},
	} {
		if got := FromBuildInfo(c.bi).String(); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if i := FromBuildInfo(&debug.BuildInfo{Settings: vcs("true")}); i.Revision != rev || !i.Modified {
		t.Errorf("revision and modified not read: %+v", i)
	}
}

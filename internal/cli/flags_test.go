package cli

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// errCalled ends a command at its library call: the flags were accepted.
var errCalled = errors.New("library called")

// calls records what the commands asked of the library, which is never reached: these
// tests need no server.
type calls struct {
	names     []string
	preflight []preflight.Options
	freeze    []freeze.Options
	conns     []*dbconn.Config
	verify    []verify.Options
	migrate   []migrate.Options
}

func (r *calls) library() library {
	return library{
		preflight: func(_ context.Context, o preflight.Options) (*preflight.Report, error) {
			r.names, r.preflight = append(r.names, "preflight"), append(r.preflight, o)
			return nil, errCalled
		},
		freeze: func(_ context.Context, c *dbconn.Config, o freeze.Options) (*freeze.Result, error) {
			r.names, r.conns, r.freeze = append(r.names, "freeze"), append(r.conns, c), append(r.freeze, o)
			return nil, errCalled
		},
		unfreeze: func(_ context.Context, c *dbconn.Config) (*freeze.UnfreezeResult, error) {
			r.names, r.conns = append(r.names, "unfreeze"), append(r.conns, c)
			return nil, errCalled
		},
		freezeStatus: func(_ context.Context, c *dbconn.Config) (*freeze.State, error) {
			r.names, r.conns = append(r.names, "freeze-status"), append(r.conns, c)
			return nil, errCalled
		},
		verify: func(_ context.Context, o verify.Options) (*verify.Report, error) {
			r.names, r.verify = append(r.names, "verify"), append(r.verify, o)
			return nil, errCalled
		},
		migrate: func(_ context.Context, o migrate.Options) (*migrate.Summary, error) {
			r.names, r.migrate = append(r.names, "migrate"), append(r.migrate, o)
			return nil, errCalled
		},
	}
}

// runFlags runs tsmigrate in-process on args with the recording library, without a
// terminal, and with neither TSMIGRATE_SOURCE nor TSMIGRATE_TARGET set.
func runFlags(t *testing.T, args ...string) (code int, stdout, stderr string, r *calls) {
	t.Helper()
	t.Setenv("TSMIGRATE_SOURCE", "")
	t.Setenv("TSMIGRATE_TARGET", "")
	r = &calls{}
	var out, errb bytes.Buffer
	code = execute(context.Background(), &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, lib: r.library()}, args)
	return code, out.String(), errb.String(), r
}

const (
	srcURI = "postgres://app:Pw-never-shown@src.example:5432/app?sslmode=require"
	dstURI = "postgres://tsdbadmin:Pw-never-shown@dst.example:34567/defaultdb?sslmode=require"
)

// Bad usage is one line on stderr, exit 2, and no call to the library: nothing is
// contacted, nothing changes.
func TestUsageErrors(t *testing.T) {
	conn := []string{"--source", srcURI, "--target", dstURI}
	with := func(args ...string) []string { return append(args, conn...) }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nonsense"}, `tsmigrate: unknown command "nonsense" for "tsmigrate"`},
		{[]string{"migrate", "--nonsense"}, "tsmigrate: unknown flag: --nonsense (see --help)"},
		{[]string{"migrate", "extra"}, `tsmigrate: unknown command "extra" for "tsmigrate migrate"`},
		{[]string{"migrate", "--jobs", "x"}, `tsmigrate: --jobs x (give 1 or more, or "auto")`},
		{[]string{"migrate", "--yes"}, "tsmigrate: no source given (pass --source URI or set TSMIGRATE_SOURCE)"},
		{[]string{"migrate", "--yes", "--source", srcURI}, "tsmigrate: no target given (pass --target URI or set TSMIGRATE_TARGET)"},
		{with("migrate", "--engine", "copy"), `tsmigrate: unknown --engine "copy" (use "dump" or "stream")`},
		{with("migrate", "--restore-path", "magic"), `tsmigrate: invalid --restore-path "magic" (write --restore-path auto, catalog or api)`},
		{with("migrate", "--progress", "loud"), `tsmigrate: unknown --progress mode "loud" (use auto, bars, plain or json)`},
		{with("migrate", "--jobs", "0"), `tsmigrate: --jobs 0 (give 1 or more, or "auto")`},
		{with("migrate", "--compress-older-than", "1h"), "tsmigrate: --compress-older-than 1h0m0s (give a positive duration together with --compress-before)"},
		{with("migrate", "--freeze-grace", "-5s"), "tsmigrate: --freeze-grace -5s (give 0 or more (0: end them at once))"},
		{with("migrate", "--roles-update"), "tsmigrate: --roles-update goes with --roles (add --roles)"},
		{with("migrate", "--database", ":b"), `tsmigrate: invalid --database ":b" (write --database SRC or --database SRC:DST)`},
		{with("migrate", "--live", "--engine", "dump"), "tsmigrate: --live is for the stream engine (use --engine stream)"},
		{with("migrate", "--live", "--rehearsal"), "tsmigrate: --live and --rehearsal exclude each other"},
		{with("migrate", "--live", "--worker"), "tsmigrate: --live and --worker exclude each other (leave one out)"},
		{with("migrate", "--live", "--keep-frozen-on-failure"), "tsmigrate: --live and --keep-frozen-on-failure exclude each other"},
		{with("migrate", "--live", "--cutover", "now"), `tsmigrate: unknown --cutover "now" (use "auto" or "prompt")`},
		{with("migrate", "--cutover", "auto"), "tsmigrate: --cutover is for --live (add --live)"},
		{with("migrate", "--replica-identity-full"), "tsmigrate: --replica-identity-full is for --live (add --live)"},
		{[]string{"migrate", "--yes", "--source", "postgres://app:Pw-never-shown@db.example:54x2/app", "--target", dstURI}, "tsmigrate: source: invalid connection string"},
		{with("preflight", "--engine", "copy"), `tsmigrate: unknown --engine "copy" (use "dump" or "stream")`},
		{with("preflight", "--restore-path", "magic"), `tsmigrate: invalid --restore-path "magic" (write --restore-path auto, catalog or api)`},
		{with("preflight", "--roles-update"), "tsmigrate: --roles-update goes with --roles (add --roles)"},
		{with("preflight", "--jobs", "0"), `tsmigrate: --jobs 0 (give 1 or more, or "auto")`},
		{with("preflight", "--replica-identity-full"), "tsmigrate: --replica-identity-full goes with --live (add --live)"},
		{with("preflight", "--live", "--engine", "dump"), "tsmigrate: --live needs the stream engine (leave out --engine dump)"},
		{[]string{"preflight", "--source", srcURI}, "tsmigrate: no target given (pass --target URI or set TSMIGRATE_TARGET)"},
		{with("verify", "--jobs", "0"), "tsmigrate: invalid --jobs 0 (give --jobs 1 or more)"},
		{with("verify", "--show-rows", "-1"), "tsmigrate: invalid --show-rows -1 (give --show-rows 0 or more)"},
		{with("verify", "--database", "a:"), `tsmigrate: invalid --database "a:" (write --database SRC or --database SRC:DST)`},
		{[]string{"freeze", "--source", srcURI}, `tsmigrate: Freeze database "app" on app@src.example:5432/app? New transactions there become read-only, and sessions connected now are ended after 10s: no terminal to confirm on (pass --yes to confirm without a terminal)`},
		{[]string{"freeze", "--yes", "--source", srcURI, "--freeze-grace", "-1s"}, "tsmigrate: --freeze-grace -1s (give 0 or more (0: end them at once))"},
		{[]string{"unfreeze"}, "tsmigrate: no source given (pass --source URI or set TSMIGRATE_SOURCE)"},
		{[]string{"freeze-status", "--source", srcURI, "--target", dstURI}, "tsmigrate: unknown flag: --target (see --help)"},
	} {
		name := strings.NewReplacer(srcURI, "SRC", dstURI, "DST").Replace(strings.Join(c.args, " "))
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr, r := runFlags(t, c.args...)
			if code != 2 || stdout != "" || !strings.HasPrefix(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stdout %q, stderr %q\nwant exit 2 and one line starting %q", code, stdout, stderr, c.want)
			}
			if strings.Contains(stderr, "Pw-never-shown") {
				t.Errorf("the password is in %q", stderr)
			}
			if len(r.names) != 0 {
				t.Errorf("the library was called (%v)", r.names)
			}
		})
	}
}

// The flags become the library's options; the connections come from the flags or,
// without them, from TSMIGRATE_SOURCE and TSMIGRATE_TARGET.
func TestFlagsBecomeOptions(t *testing.T) {
	t.Run("migrate", func(t *testing.T) {
		code, _, _, r := runFlags(t, "migrate", "--source", srcURI, "--target", dstURI, "--yes", "--engine", "dump",
			"--jobs", "3", "--database", "a:b", "--database", "c", "--no-verify", "--freeze-grace", "2s",
			"--restore-path", "catalog", "--compress-before", "--compress-older-than", "168h", "--roles", "--roles-update",
			"--keep-frozen-on-failure", "--worker-wait", "1m", "--pg-bin", "/opt/pg/bin")
		if code != 1 || len(r.migrate) != 1 {
			t.Fatalf("exit %d, calls %v", code, r.names)
		}
		o := r.migrate[0]
		if o.Engine != migrate.EngineDump || o.Jobs != 3 || !o.NoVerify || o.FreezeGrace != 2*time.Second ||
			o.RestorePath != schema.PathCatalog || !o.CompressBefore || o.CompressOlderThan != 168*time.Hour ||
			!o.Roles || !o.RolesUpdate || !o.KeepFrozenOnFailure || o.WorkerWait != time.Minute || o.PgBin != "/opt/pg/bin" ||
			o.Resume || o.Worker || o.Rehearsal {
			t.Errorf("options: %+v", o)
		}
		if want := []migrate.Mapping{{Source: "a", Target: "b"}, {Source: "c", Target: "c"}}; !reflect.DeepEqual(o.Databases, want) {
			t.Errorf("databases %+v, want %+v", o.Databases, want)
		}
		if o.Source.String() != "app@src.example:5432/app" || o.Target.String() != "tsdbadmin@dst.example:34567/defaultdb" {
			t.Errorf("source %s, target %s", o.Source, o.Target)
		}
		if err := o.Confirm(migrate.Plan{}); err != nil {
			t.Errorf("--yes: Confirm says %v", err)
		}
	})
	t.Run("migrate --live", func(t *testing.T) {
		code, _, _, r := runFlags(t, "migrate", "--source", srcURI, "--target", dstURI, "--yes", "--live", "--cutover", "prompt", "--replica-identity-full")
		if code != 1 || len(r.migrate) != 1 {
			t.Fatalf("exit %d, calls %v", code, r.names)
		}
		o := r.migrate[0]
		if !o.Live || o.Cutover != migrate.CutoverPrompt || !o.ReplicaIdentityFull || o.ConfirmCutover == nil || o.Engine != migrate.EngineStream {
			t.Errorf("options: %+v", o)
		}
		// No terminal: the cut-over cannot be confirmed, which aborts the live run.
		if err := o.ConfirmCutover(context.Background()); err == nil {
			t.Error("ConfirmCutover without a terminal says yes")
		}
		if err := o.Confirm(migrate.Plan{Live: true}); err != nil {
			t.Errorf("--yes: Confirm says %v", err)
		}
		_, _, _, r = runFlags(t, "migrate", "--source", srcURI, "--target", dstURI, "--yes", "--live")
		if o := r.migrate[0]; !o.Live || o.Cutover != "" || o.ReplicaIdentityFull {
			t.Errorf("--live alone: %+v", o)
		}
	})
	t.Run("migrate defaults", func(t *testing.T) {
		t.Setenv("TSMIGRATE_SOURCE", srcURI)
		t.Setenv("TSMIGRATE_TARGET", dstURI)
		r := &calls{}
		var out, errb bytes.Buffer
		code := execute(context.Background(), &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, lib: r.library()}, []string{"migrate"})
		if code != 1 || len(r.migrate) != 1 {
			t.Fatalf("exit %d, calls %v, stderr %q", code, r.names, errb.String())
		}
		o := r.migrate[0]
		if o.Engine != migrate.EngineStream || o.RestorePath != schema.PathAuto || o.Jobs != 0 ||
			o.FreezeGrace != 10*time.Second || o.NoVerify || o.Roles || len(o.Databases) != 0 || o.Live || o.Cutover != "" ||
			o.Source.Database() != "app" || o.Target.Database() != "defaultdb" {
			t.Errorf("options: %+v", o)
		}
		if err := o.Confirm(migrate.Plan{Source: "s", Target: "t"}); err == nil || !strings.Contains(err.Error(), "--yes") {
			t.Errorf("without --yes and a terminal, Confirm says %v, want a refusal naming --yes", err)
		}
	})
	t.Run("preflight", func(t *testing.T) {
		code, _, _, r := runFlags(t, "preflight", "--source", srcURI, "--target", dstURI, "--engine", "dump", "--restore-path", "api", "--roles")
		if code != 1 || len(r.preflight) != 1 {
			t.Fatalf("exit %d, calls %v", code, r.names)
		}
		o := r.preflight[0]
		if o.Engine != preflight.EngineDump || o.RestorePath != schema.PathAPI || !o.Roles || o.RolesUpdate ||
			o.Source.Database() != "app" || o.Target.Database() != "defaultdb" {
			t.Errorf("options: %+v", o)
		}
		// --jobs auto (the default) is checked as migrate runs it: the machine's cores
		// for every step but the copy, which chooses within the sessions free.
		if o.Jobs != copy.DefaultJobs() {
			t.Errorf("--jobs auto checks %d sessions' worth, want %d as migrate", o.Jobs, copy.DefaultJobs())
		}
		if _, _, _, r := runFlags(t, "preflight", "--source", srcURI, "--target", dstURI, "--jobs", "7"); len(r.preflight) != 1 || r.preflight[0].Jobs != 7 {
			t.Errorf("--jobs 7: calls %v %+v", r.names, r.preflight)
		}
		if o.Live || o.ReplicaIdentityFull {
			t.Errorf("without --live: options %+v", o)
		}
		if _, _, _, r := runFlags(t, "preflight", "--source", srcURI, "--target", dstURI, "--live"); len(r.preflight) != 1 ||
			!r.preflight[0].Live || r.preflight[0].ReplicaIdentityFull || r.preflight[0].Engine != preflight.EngineStream {
			t.Errorf("--live: calls %v %+v", r.names, r.preflight)
		}
		if _, _, _, r := runFlags(t, "preflight", "--source", srcURI, "--target", dstURI, "--live", "--replica-identity-full"); len(r.preflight) != 1 ||
			!r.preflight[0].Live || !r.preflight[0].ReplicaIdentityFull {
			t.Errorf("--live --replica-identity-full: calls %v %+v", r.names, r.preflight)
		}
	})
	t.Run("verify", func(t *testing.T) {
		code, _, _, r := runFlags(t, "verify", "--source", srcURI, "--target", dstURI, "--jobs", "4", "--show-rows", "5",
			"--privileges", "--database", "a:b", "--database", "c")
		if code != 2 || len(r.verify) != 1 { // could not compare: the first pair's error ends the run
			t.Fatalf("exit %d, calls %v", code, r.names)
		}
		o := r.verify[0]
		if o.Jobs != 4 || o.ShowRows != 5 || !o.Privileges || o.Source.Database() != "a" || o.Target.Database() != "b" {
			t.Errorf("options: %+v", o)
		}
	})
	t.Run("freeze", func(t *testing.T) {
		code, _, _, r := runFlags(t, "freeze", "--source", srcURI, "--yes", "--no-terminate", "--wait-timeout", "3m",
			"--proof-window", "5s", "--freeze-grace", "0s")
		if code != 1 || len(r.freeze) != 1 {
			t.Fatalf("exit %d, calls %v", code, r.names)
		}
		o := r.freeze[0]
		if !o.NoTerminate || o.WaitTimeout != 3*time.Minute || o.ProofWindow != 5*time.Second || o.Grace != 0 || r.conns[0].Database() != "app" {
			t.Errorf("options: %+v", o)
		}
	})
	for _, cmd := range []string{"unfreeze", "freeze-status"} {
		t.Run(cmd, func(t *testing.T) {
			t.Setenv("TSMIGRATE_SOURCE", srcURI)
			r := &calls{}
			var out, errb bytes.Buffer
			code := execute(context.Background(), &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, lib: r.library()}, []string{cmd})
			if code != 1 || !reflect.DeepEqual(r.names, []string{cmd}) || r.conns[0].String() != "app@src.example:5432/app" {
				t.Errorf("exit %d, calls %v, stderr %q", code, r.names, errb.String())
			}
		})
	}
}

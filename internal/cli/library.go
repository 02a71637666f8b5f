package cli

import (
	"context"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// library is what the commands call once their flags are checked and turned into the
// library's options: the only place they reach a server. Tests replace it (as cli/cli's
// commands take a run function) to check what the flags become, and the usage errors
// found before any call, without servers.
type library struct {
	preflight    func(context.Context, preflight.Options) (*preflight.Report, error)
	freeze       func(context.Context, *dbconn.Config, freeze.Options) (*freeze.Result, error)
	unfreeze     func(context.Context, *dbconn.Config) (*freeze.UnfreezeResult, error)
	freezeStatus func(context.Context, *dbconn.Config) (*freeze.State, error)
	verify       func(context.Context, verify.Options) (*verify.Report, error)
	migrate      func(context.Context, migrate.Options) (*migrate.Summary, error)
}

// theLibrary is the real one.
var theLibrary = library{
	preflight:    preflight.Run,
	freeze:       freeze.Freeze,
	unfreeze:     freeze.Unfreeze,
	freezeStatus: freeze.Status,
	verify:       verify.Run,
	migrate:      migrate.Run,
}

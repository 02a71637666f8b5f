package freeze

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// A deferred proof outlives the process that froze: a migration keeps the baseline
// (Encode) in its journal, and the process that resumes it after a kill restores it
// (RestoreProof) to finish the proof, which then covers both runs. The encoding holds
// all that Finish compares: the write counters, the server's next transaction id, the
// postmaster's start time and the database's statistics reset time, the freeze id. (A
// baseline is only taken with no transaction id held and no prepared transaction.)

// baselineVersion is the version of the encoding; RestoreProof reads only its own.
const baselineVersion = 1

type encodedBaseline struct {
	Version       int           `json:"version"`
	FreezeID      string        `json:"freeze_id"`
	Database      string        `json:"database"`
	Window        time.Duration `json:"proof_window_ns"`
	Taken         time.Time     `json:"taken"` // this process's clock, for the window
	At            time.Time     `json:"at"`    // the server's clock
	RowsWritten   int64         `json:"rows_written"`
	Commits       int64         `json:"commits"`
	WALBytes      int64         `json:"wal_bytes"`
	NextXID       int64         `json:"next_xid"`
	Tracked       bool          `json:"counters_tracked"`
	ServerStarted time.Time     `json:"postmaster_start_time"`
	StatsReset    *time.Time    `json:"stats_reset"`
	// The catalog digest (catalog.go); absent from a baseline of an older tsmigrate.
	CatalogRows *int64 `json:"catalog_rows,omitempty"`
	Sequences   int64  `json:"sequences_hash,omitempty"`
}

// Encode returns the baseline as versioned JSON, for RestoreProof.
func (p *PendingProof) Encode() ([]byte, error) {
	b, err := json.Marshal(encodedBaseline{Version: baselineVersion, FreezeID: p.id, Database: p.src.Database(),
		Window: p.window, Taken: p.taken, At: p.base.at, RowsWritten: p.base.rows, Commits: p.base.commits,
		WALBytes: p.base.wal, NextXID: p.base.nextXID, Tracked: p.base.tracked, ServerStarted: p.base.started,
		StatsReset: p.base.statsReset, CatalogRows: catalogRows(p.base), Sequences: p.base.seqsHash})
	if err != nil {
		return nil, fmt.Errorf("encode the freeze's baseline: %w", err)
	}
	return b, nil
}

// RestoreProof makes the PendingProof that Encode wrote, for src's database (which must
// be the database it was taken of), to be finished by this process.
func RestoreProof(src *dbconn.Config, data []byte) (*PendingProof, error) {
	var e encodedBaseline
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("the freeze's baseline is unreadable: %w", err)
	}
	switch {
	case e.Version != baselineVersion:
		return nil, fmt.Errorf("the freeze's baseline is of version %d, and this tsmigrate reads version %d", e.Version, baselineVersion)
	case e.FreezeID == "" || e.At.IsZero() || e.ServerStarted.IsZero():
		return nil, errors.New("the freeze's baseline is incomplete (no freeze id, sample time or server start time)")
	case e.Database != src.Database():
		return nil, fmt.Errorf("the freeze's baseline is of database %q, not %q", e.Database, src.Database())
	}
	return &PendingProof{src: src, id: e.FreezeID, window: e.Window, taken: e.Taken,
		base: sample{at: e.At, rows: e.RowsWritten, commits: e.Commits, wal: e.WALBytes, nextXID: e.NextXID,
			tracked: e.Tracked, started: e.ServerStarted, statsReset: e.StatsReset,
			hasCatalog: e.CatalogRows != nil, catalogRows: deref(e.CatalogRows), seqsHash: e.Sequences}}, nil
}

func catalogRows(s sample) *int64 {
	if !s.hasCatalog {
		return nil
	}
	return &s.catalogRows
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

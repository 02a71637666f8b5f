package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/freeze"
)

// resumeBaseline restores the baseline of the source's write counters that the first
// run recorded in d's journal, and checks at once that nothing moved since: a write
// after the first run's freeze may be missing from the units that run copied, and a
// resume refused here has changed nothing. The proof at the end of the resumed copy
// starts from that baseline, so it covers both runs.
func resumeBaseline(ctx context.Context, d *DatabaseRun, encoded []byte) (*freeze.PendingProof, error) {
	if encoded == nil {
		return nil, refuseResume("resume: the target's journal of %s holds no baseline of the source's write counters (the first run stopped before it recorded one), so nothing proves that the source did not change since the first run", d.Source)
	}
	p, err := freeze.RestoreProof(d.src, encoded)
	if err != nil {
		return nil, refuseResume("resume: the target's journal of %s: %s, so nothing proves that the source did not change since the first run", d.Source, err)
	}
	moved, err := p.Moved(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: compare the source with the first run's baseline: %w", d.Source, err)
	}
	if len(moved) > 0 {
		return nil, refuseResume("resume: source database %s is not proven unchanged since the first run's freeze (baseline %s), and what that run copied may miss a change: %s",
			d.Source, p.Baseline().UTC().Format(time.RFC3339), strings.Join(moved, "; "))
	}
	return p, nil
}

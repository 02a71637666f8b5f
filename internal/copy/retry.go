package copy

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// transient says whether err is worth another attempt of the unit: a lost or refused
// connection, a serialization failure, a deadlock, an administrator shutdown.
// Errors the server reports for the data itself (23xxx and the like) are not.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var p permanent
	if errors.As(err, &p) {
		return false
	}
	var xe *exit.Error
	if errors.As(err, &xe) && xe.Err == nil { // a condition of ours for the user to act on
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return dbconn.RetryableCode(pgErr.Code)
	}
	// Anything else that is not the server's verdict is the connection failing: a
	// reset, an EOF, a timeout, a refused reconnect.
	return true
}

// backoff is the wait before attempt n (1-based): first, doubling, at most max.
func backoff(first, max time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

package dbconn

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/clock"
)

// RetryableCode says whether a server error of SQLSTATE code is worth another attempt:
// a connection exception, a serialization failure or deadlock, a server shutting down
// or not accepting connections yet, too many connections. Checked on PostgreSQL 15, 17.
func RetryableCode(code string) bool {
	switch code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"57P01", // admin_shutdown
		"57P02", // crash_shutdown
		"57P03", // cannot_connect_now
		"53300": // too_many_connections
		return true
	}
	return strings.HasPrefix(code, "08") // connection exceptions
}

// Lost says whether err is a connection that was lost or could not be made (a reset,
// an EOF, a refused or timed-out connect), or a server error RetryableCode accepts:
// what another attempt on a new connection may get past. A server's verdict on the
// statement, a cancelled context, and tsmigrate's own errors are not.
func Lost(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return RetryableCode(pgErr.Code)
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || pgconn.Timeout(err) || errors.Is(err, net.ErrClosed)
}

// ReadAttempts bounds the attempts of Retry; the waits between them are 1, 2, 4 and 8
// seconds, so a server that restarts or fails over in about 15 s is waited for.
const ReadAttempts = 5

// Retry runs f until it succeeds, fails with an error that is not Lost, or has run
// ReadAttempts times; before each new attempt it calls onRetry (nil: nobody listens)
// with the attempt's number (2, 3, ...) and the error, then waits. f must be safe to
// run again: a read on a connection of its own.
func Retry(ctx context.Context, f func() error, onRetry func(attempt int, err error)) error {
	wait := time.Second
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !Lost(err) || attempt == ReadAttempts || ctx.Err() != nil {
			return err
		}
		if onRetry != nil {
			onRetry(attempt+1, err)
		}
		if err := clock.Sleep(ctx, wait); err != nil {
			return err
		}
		wait *= 2
	}
}

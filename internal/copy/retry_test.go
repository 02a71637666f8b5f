package copy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/exit"
)

func TestTransient(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"serialization failure", pg("40001"), true},
		{"deadlock", pg("40P01"), true},
		{"admin shutdown", pg("57P01"), true},
		{"connection failure", pg("08006"), true},
		{"lost connection", &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, true},
		{"unexpected EOF", fmt.Errorf("copy: %w", io.ErrUnexpectedEOF), true},
		{"cannot connect, wrapped", &exit.Error{Code: exit.Usage, Msg: "cannot connect", Err: &net.OpError{Op: "dial"}}, true},
		{"check violation", pg("23514"), false},
		{"unique violation in a unit", &UnitError{Unit: "t", Side: "target", Err: pg("23505")}, false},
		{"bad password", &exit.Error{Code: exit.Usage, Msg: "cannot connect", Err: pg("28P01")}, false},
		{"condition for the user", &exit.Error{Code: exit.Failed, Msg: "table rewritten"}, false},
		{"ours", permanent{errors.New("row counts differ")}, false},
		{"cancelled", context.Canceled, false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("%s: transient %v, want %v", c.name, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	var got []time.Duration
	for n := 1; n <= 7; n++ {
		got = append(got, backoff(time.Second, 30*time.Second, n))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoff %v", got)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := clock.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("sleep on a cancelled context: %v", err)
	}
}

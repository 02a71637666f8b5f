// Package exit defines tsmigrate's exit codes, what each means (Meanings, which
// `tsmigrate help exit-codes` prints), and the typed error that carries one.
package exit

import (
	"context"
	"errors"
	"fmt"
)

const (
	OK     = 0
	Failed = 1
	Usage  = 2
	// CannotCompare is verify's exit code when the comparison itself failed, as
	// diff(1)'s 2 is: the same number as Usage.
	CannotCompare = 2
	Blocked       = 3
	Interrupted   = 130
)

// Meaning is what one exit code says.
type Meaning struct {
	Code  int
	Means string
}

// Meanings are tsmigrate's exit codes, in order, as `tsmigrate help exit-codes` and
// each command's help give them (a command may say more about its own).
var Meanings = []Meaning{
	{OK, "success"},
	{Failed, "the operation failed (verify: the two sides differ)"},
	{Usage, "bad usage or input, or a server that cannot be reached or logged into, nothing changed (verify: could not compare, as diff(1)'s 2)"},
	{Blocked, "pre-flight found a blocking problem, nothing changed"},
	{Interrupted, "interrupted (Ctrl-C, SIGTERM)"},
}

// Error is a condition the user must act on: one line of what is wrong (Msg), what
// to do (Hint), and the exit code that goes with it.
type Error struct {
	Code int
	Msg  string
	Hint string
	Err  error // the cause, for errors.Is/As; not shown to the user beyond Msg
}

func (e *Error) Error() string {
	if e.Hint != "" {
		return e.Msg + " (" + e.Hint + ")"
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New makes an Error with code, message and hint.
func New(code int, hint, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// Usagef is bad usage or input: exit 2.
func Usagef(hint, format string, args ...any) *Error { return New(Usage, hint, format, args...) }

// Code gives the exit code for err: the code of an *Error in its chain, 130 for a
// cancelled context, 1 otherwise.
func Code(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.Canceled) {
		return Interrupted
	}
	return Failed
}

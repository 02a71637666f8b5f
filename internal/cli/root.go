// Package cli is tsmigrate's command line: flags to typed options, the library's
// results and events to tables, progress and JSON, errors to exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/version"
)

// exitCodesHelp lists the exit codes (exit.Meanings), for the root's help and the
// commands' that have nothing to add, and for `tsmigrate help exit-codes`.
var exitCodesHelp = func() string {
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for _, m := range exit.Meanings {
		fmt.Fprintf(&b, "  %-4d ", m.Code)
		writeWrapped(&b, m.Means, 7, 88)
	}
	return strings.TrimSuffix(b.String(), "\n")
}()

const connHelp = `Connections: --source/--target take a libpq URI (postgres://user:pass@host:port/db?sslmode=require)
or key=value string; when absent, TSMIGRATE_SOURCE / TSMIGRATE_TARGET. The PG* environment
variables and ~/.pgpass (PGPASSFILE) apply as they do for psql.`

// app is what every command shares: the streams and the global flags.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lib            library
	passwordPrompt bool
	verbose        bool
	pgBin          string

	// setProcs sets how many threads run Go code at once (runtime.GOMAXPROCS); nil
	// leaves the runtime as it is.
	setProcs func(int) int

	warnMu sync.Mutex
	warned map[string]bool // connection warnings already printed

	// args are the command line's arguments; flagErrorDocs, for a command whose --json
	// promises a document even for bad usage, writes that document for a flag cobra
	// could not parse (its RunE never runs then).
	args          []string
	flagErrorDocs map[*cobra.Command]func(error)
}

// docOnFlagError makes doc write c's --json document of a flag error.
func (a *app) docOnFlagError(c *cobra.Command, doc func(error)) {
	if a.flagErrorDocs == nil {
		a.flagErrorDocs = map[*cobra.Command]func(error){}
	}
	a.flagErrorDocs[c] = doc
}

// jsonAsked says whether args ask c for --json (or --json=true), before any "--": a
// "--json" that is the value of one of c's flags that take one is not.
func jsonAsked(c *cobra.Command, args []string) bool {
	for i := 0; i < len(args); i++ {
		s := args[i]
		if s == "--" {
			return false
		}
		flag, ok := strings.CutPrefix(s, "--")
		if !ok {
			continue
		}
		name, value, hasValue := strings.Cut(flag, "=")
		if name == "json" {
			on, err := strconv.ParseBool(value)
			return !hasValue || (err == nil && on)
		}
		if fl := c.Flags().Lookup(name); fl != nil && fl.NoOptDefVal == "" && !hasValue {
			i++ // its value
		}
	}
	return false
}

// warn prints a connection warning to stderr, once per run whatever the number of
// connections to that server (verify and migrate make several, from several goroutines).
func (a *app) warn(msg string) {
	a.warnMu.Lock()
	defer a.warnMu.Unlock()
	if a.warned[msg] {
		return
	}
	if a.warned == nil {
		a.warned = map[string]bool{}
	}
	a.warned[msg] = true
	fmt.Fprintln(a.stderr, "tsmigrate: warning: "+dbconn.Redact(msg))
}

var commands []func(a *app) *cobra.Command

// register adds a command to the root; each command's file calls it from init.
func register(f func(a *app) *cobra.Command) { commands = append(commands, f) }

func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "tsmigrate",
		Short: "Move whole PostgreSQL + TimescaleDB databases between servers, with nothing lost",
		Long: `tsmigrate moves a whole PostgreSQL + TimescaleDB database (or several) from one server to
another: pre-flight checks, a proven write freeze, the copy, and proof that both sides match.

` + connHelp + "\n\n" + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVar(&a.passwordPrompt, "password-prompt", false, "ask on the terminal for a missing password (no echo)")
	root.PersistentFlags().BoolVarP(&a.verbose, "verbose", "v", false, "show more detail")
	root.PersistentFlags().StringVar(&a.pgBin, "pg-bin", "", "directory holding pg_dump and pg_restore to use")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		uerr := exit.Usagef("see --help", "%s", err)
		if doc := a.flagErrorDocs[c]; doc != nil && jsonAsked(c, a.args) {
			doc(uerr)
		}
		return uerr
	})
	for _, f := range commands {
		c := f(a)
		c.SetFlagErrorFunc(root.FlagErrorFunc())
		root.AddCommand(c)
	}
	root.AddCommand(&cobra.Command{
		Use:   "exit-codes",
		Short: "What tsmigrate's exit codes mean",
		Long:  exitCodesHelp + "\n\nA command's --help says what each code means for it.",
	})
	root.SetHelpTemplate(root.HelpTemplate())
	return root
}

// Run runs tsmigrate with args and returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return execute(ctx, &app{stdin: stdin, stdout: stdout, stderr: stderr, lib: theLibrary}, args)
}

// Main is Run for the tsmigrate program itself: it may also size the Go runtime to the
// work (see app.sizeRuntime), which tests running commands in their own process must not.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return execute(ctx, &app{stdin: stdin, stdout: stdout, stderr: stderr, lib: theLibrary, setProcs: runtime.GOMAXPROCS}, args)
}

// procsFor is how many threads may run tsmigrate's own Go code at once for a command
// with jobs parallel jobs where cpus may run (the runtime's own default, which follows
// a container's CPU quota): one per two jobs. Its work is
// light (moving bytes between two connections per job) and the database servers are
// often on the same machine: spare runtime threads, spinning and waking one another,
// took CPU from them (the stream engine's copy took 7.4 s against 6.9 s with one, in
// seven alternating runs of the benchmark's database, --jobs 2, 2 cores).
func procsFor(jobs, cpus int) int { return max(1, min(cpus, (jobs+1)/2)) }

// sizeRuntime applies procsFor, unless the user set GOMAXPROCS.
func (a *app) sizeRuntime(jobs int) {
	if a.setProcs != nil && os.Getenv("GOMAXPROCS") == "" {
		a.setProcs(procsFor(jobs, runtime.GOMAXPROCS(0)))
	}
}

func execute(ctx context.Context, a *app, args []string) int {
	a.args = args
	root := newRoot(a)
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exit.OK
	}
	code := exit.Code(err)
	if ctx.Err() != nil && code != exit.Usage {
		code = exit.Interrupted
	}
	var e *exit.Error
	switch {
	case code == exit.Interrupted:
		fmt.Fprintln(a.stderr, "tsmigrate: interrupted")
	case errors.As(err, &e) || isCobraUsage(err):
		fmt.Fprintln(a.stderr, "tsmigrate: "+dbconn.Redact(firstLine(err.Error())))
	default:
		fmt.Fprintln(a.stderr, "tsmigrate: error: "+dbconn.Redact(firstLine(err.Error())))
	}
	if isCobraUsage(err) {
		return exit.Usage
	}
	return code
}

func isCobraUsage(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.Contains(msg, "accepts ") || strings.HasPrefix(msg, "required flag")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// connFlags are --source/--target, with their environment fallbacks.
type connFlags struct {
	source, target string
}

func (f *connFlags) addSource(c *cobra.Command) {
	c.Flags().StringVar(&f.source, "source", "", "source connection URI (default $TSMIGRATE_SOURCE)")
}

func (f *connFlags) addTarget(c *cobra.Command) {
	c.Flags().StringVar(&f.target, "target", "", "target connection URI (default $TSMIGRATE_TARGET)")
}

// config resolves the connection of role from its flag or environment variable,
// asking for the password on the terminal when --password-prompt is set and none is known.
// Every connection made with it prints its warnings (a remote server without TLS) to
// stderr, once per server.
func (a *app) config(role, flagValue string) (*dbconn.Config, error) {
	env := "TSMIGRATE_" + strings.ToUpper(role)
	s := flagValue
	if s == "" {
		s = os.Getenv(env)
	}
	if s == "" {
		return nil, exit.Usagef(fmt.Sprintf("pass --%s URI or set %s", role, env), "no %s given", role)
	}
	c, err := dbconn.Parse(role, s)
	if err != nil {
		return nil, err
	}
	c.OnWarning = a.warn
	if a.passwordPrompt && !c.HasPassword() {
		pw, err := readPassword(fmt.Sprintf("Password for %s (%s): ", role, c))
		if err != nil {
			return nil, err
		}
		c.SetPassword(pw)
	}
	return c, nil
}

func readPassword(prompt string) (string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return "", exit.Usagef("put the password in ~/.pgpass or PGPASSWORD instead", "--password-prompt needs a terminal, and there is none")
	}
	defer tty.Close()
	// Echo goes off here, before the prompt, and comes back here, whatever happens:
	// the read below may stay blocked after a Ctrl-C, and must not touch the terminal's
	// settings then (term.ReadPassword would, in its goroutine, racing the restore).
	fd := int(tty.Fd())
	before, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", exit.Usagef("put the password in ~/.pgpass or PGPASSWORD instead", "--password-prompt: cannot read the terminal's settings: %v", err)
	}
	quiet := *before
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	quiet.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", exit.Usagef("put the password in ~/.pgpass or PGPASSWORD instead", "--password-prompt: cannot turn the terminal's echo off: %v", err)
	}
	pw, err := interruptible(func() { fmt.Fprint(tty, prompt) }, func() (string, error) { return readLine(tty) })
	unix.IoctlSetTermios(fd, unix.TCSETS, before)
	fmt.Fprintln(tty)
	switch {
	case errors.Is(err, context.Canceled):
		return "", err
	case err != nil:
		return "", exit.Usagef("", "reading the password: %v", err)
	}
	return pw, nil
}

// readLine reads one line from the terminal, without its end.
func readLine(r io.Reader) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := r.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return strings.TrimSuffix(string(line), "\r"), nil
			}
			line = append(line, b[0])
		}
		if err == io.EOF && len(line) > 0 {
			return string(line), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// interruptible shows a prompt and returns what read returns, or context.Canceled as
// soon as SIGINT or SIGTERM arrives once the prompt is shown. A read from the terminal
// does not end on Ctrl-C by itself: main's signal.NotifyContext catches the signal, and
// the read would wait for Enter.
func interruptible[T any](prompt func(), read func() (T, error)) (T, error) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	prompt() // after Notify: a Ctrl-C as soon as the prompt shows is not missed
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := read()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-sig:
		var zero T
		return zero, context.Canceled
	}
}

// isTerminal says whether w is a terminal (for colour and prompts).
func isTerminal(f any) bool {
	if file, ok := f.(*os.File); ok {
		return term.IsTerminal(int(file.Fd()))
	}
	return false
}

// confirm asks a yes/no question on the terminal. Without a terminal it refuses unless
// yes is set: anything that stops writes on a server needs a person's consent.
func (a *app) confirm(yes bool, question string) error {
	if yes {
		return nil
	}
	if !isTerminal(a.stdin) {
		return exit.Usagef("pass --yes to confirm without a terminal", "%s: no terminal to confirm on", strings.TrimSuffix(question, "?"))
	}
	answer, err := interruptible(func() { fmt.Fprintf(a.stderr, "%s [y/N] ", question) }, func() (string, error) {
		var s string
		fmt.Fscanln(a.stdin, &s)
		return s, nil
	})
	if err != nil {
		fmt.Fprintln(a.stderr)
		return err
	}
	if a := strings.ToLower(strings.TrimSpace(answer)); a == "y" || a == "yes" {
		return nil
	}
	return exit.Usagef("", "not confirmed: nothing was changed")
}

func init() {
	register(func(a *app) *cobra.Command {
		return &cobra.Command{
			Use:     "version",
			Short:   "Print tsmigrate's version: the module version and VCS revision it was built from",
			Example: `  tsmigrate version`,
			Args:    cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				fmt.Fprintf(a.stdout, "tsmigrate %s\n", version.Get())
				return nil
			},
		}
	})
}

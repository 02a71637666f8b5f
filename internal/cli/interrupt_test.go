package cli_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// openPTY opens a pseudo-terminal pair (Linux).
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Skipf("unlock pty: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Skipf("pty number: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pty: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func echoOn(t *testing.T, tty *os.File) bool {
	t.Helper()
	var st syscall.Termios
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, tty.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&st))); e != 0 {
		t.Fatalf("read terminal settings: %v", e)
	}
	return st.Lflag&syscall.ECHO != 0
}

// atTerminal runs tsmigrate with args on a terminal of its own; at each output, keys
// gives what to type once the screen shows something (nil: nothing yet), and it ends
// when the screen holds end or tsmigrate is gone (or after wait, killing it).
func atTerminal(t *testing.T, args []string, keys func(screen string) []byte, end string, wait time.Duration) terminalRun {
	t.Helper()
	bin := testenv.Binary(t)
	master, tty := openPTY(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "PGPASSFILE=/dev/null", "PGPASSWORD=")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	output := make(chan string, 1)
	go func() { // everything the terminal shows, until tsmigrate is gone
		var all bytes.Buffer
		buf := make([]byte, 4096)
		typed := false
		for {
			n, err := master.Read(buf)
			all.Write(buf[:n])
			if !typed {
				if k := keys(all.String()); k != nil {
					typed = true
					master.Write(k)
				}
			}
			if err != nil || strings.Contains(all.String(), end) || strings.Contains(all.String(), "tsmigrate: ") {
				output <- all.String()
				return
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return terminalRun{err: err, screen: <-output, tty: tty, ended: true}
	case <-time.After(wait):
		cmd.Process.Kill()
		<-exited
		return terminalRun{tty: tty}
	}
}

// terminalRun is how a run at a terminal went.
type terminalRun struct {
	err    error  // as cmd.Wait returned it
	screen string // what the terminal showed
	tty    *os.File
	ended  bool // false: still running after the wait, killed
}

// Ctrl-C at a prompt (the freeze's confirmation, --password-prompt) ends tsmigrate at
// once with exit 130, the terminal as it was, and nothing changed: no server is even
// contacted (the URIs point at a closed port).
func TestCtrlCAtPrompt(t *testing.T) {
	const nowhere = "postgres://u@127.0.0.1:1/db"
	for _, c := range []struct {
		name   string
		args   []string
		prompt string
	}{
		{"freeze confirmation", []string{"freeze", "--source", nowhere + "?password=x"}, "[y/N]"},
		{"password prompt", []string{"preflight", "--password-prompt", "--source", nowhere, "--target", nowhere}, "Password for source"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctrlC := func(screen string) []byte {
				if strings.Contains(screen, c.prompt) {
					return []byte{3} // Ctrl-C, as typed
				}
				return nil
			}
			run := atTerminal(t, c.args, ctrlC, "tsmigrate: ", 10*time.Second)
			err, out, tty := run.err, run.screen, run.tty
			if !run.ended {
				t.Fatal("tsmigrate still waits 10 s after Ctrl-C at the prompt")
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 130 || !strings.Contains(out, "tsmigrate: interrupted") {
				t.Errorf("got %v, want exit 130 saying interrupted; the terminal showed %q", err, out)
			}
			if !echoOn(t, tty) {
				t.Error("the terminal was left with echo off")
			}
		})
	}
}

// A password typed at --password-prompt logs in, is not echoed, and leaves the
// terminal as it was.
func TestPasswordPromptTyped(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	db := testenv.NewDB(t, srv, false)
	typePassword := func(screen string) []byte {
		if strings.Contains(screen, "Password for source") {
			time.Sleep(100 * time.Millisecond) // as a person would: after the prompt
			return []byte(testenv.SuperPassword + "\r")
		}
		return nil
	}
	args := []string{"freeze-status", "--password-prompt",
		"--source", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", srv.Port, db)}
	run := atTerminal(t, args, typePassword, "not frozen", 20*time.Second)
	err, out, tty := run.err, run.screen, run.tty
	if !run.ended {
		t.Fatal("tsmigrate still waits 20 s after the password was typed")
	}
	if err != nil || !strings.Contains(out, "not frozen") {
		t.Errorf("got %v, want exit 0 and the freeze status; the terminal showed %q", err, out)
	}
	if strings.Contains(out, testenv.SuperPassword) {
		t.Errorf("the password was echoed: %q", out)
	}
	if !echoOn(t, tty) {
		t.Error("the terminal was left with echo off")
	}
}

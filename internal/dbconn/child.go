package dbconn

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// childEnvNames are the environment variables a child process (pg_dump, pg_restore)
// gets from tsmigrate's environment; every other one is left out, TSMIGRATE_SOURCE
// and TSMIGRATE_TARGET above all, whose URIs may hold passwords. Besides these, the PG*
// variables but PGPASSWORD (libpq's connection defaults: PGHOST, PGSSLMODE, ...; the
// connection string given to the child names only what the user wrote) and the LC_*
// ones but those of the messages (see ChildEnv). HOME is where libpq finds
// ~/.postgresql (client certificates, root.crt) and ~/.pg_service.conf; KRB5* serve
// GSSAPI logins; SSL_CERT_* OpenSSL's "system" roots; LOCPATH is where the C library
// finds the locales.
var childEnvNames = map[string]bool{
	"PATH": true, "HOME": true, "TMPDIR": true, "TZ": true, "LANG": true, "LOCPATH": true,
	"KRB5CCNAME": true, "KRB5_CONFIG": true, "KRB5_KTNAME": true, "KRB5_CLIENT_KTNAME": true,
	"SSL_CERT_FILE": true, "SSL_CERT_DIR": true,
}

// ChildEnv is the environment for a child process that is given no password: the
// variables of tsmigrate's environment that such a program may need (childEnvNames),
// without PGPASSWORD, and with its messages in English (LC_MESSAGES=C, no LANGUAGE):
// tsmigrate reads what pg_dump and pg_restore print to tell the known harmless messages
// from errors and to name the object of each, and a translated message is none of
// those it knows (with LANG=de_DE.UTF-8, pg_restore says "Fehler: aus TOC-Eintrag ...").
// LC_ALL, which would override LC_MESSAGES, becomes LANG: the other categories (the
// character set above all) stay the user's.
func ChildEnv() []string {
	var env []string
	all := ""
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		switch {
		case name == "PGPASSWORD", name == "LC_MESSAGES", name == "LANGUAGE":
		case name == "LC_ALL":
			all = value
		case childEnvNames[name], strings.HasPrefix(name, "PG"), strings.HasPrefix(name, "LC_"):
			env = append(env, kv)
		}
	}
	if all != "" {
		// LC_ALL overrode LANG and every LC_* variable.
		env = slices.DeleteFunc(env, func(kv string) bool {
			return strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "LC_")
		})
		env = append(env, "LANG="+all)
	}
	return append(env, "LC_MESSAGES=C")
}

// Child is how a child process (pg_dump, pg_restore) reaches a server: a connection
// string without the password, for --dbname; the environment to start it with; and
// the files to hand it as exec.Cmd.ExtraFiles, first of all, in that order. A known
// password travels in a passfile that exists in memory only (memfd_create), handed over
// as the child's file descriptor 3 and named by PGPASSFILE=/proc/self/fd/3: nothing
// holds the password on disk, whatever way tsmigrate or the child ends, SIGKILL
// included. libpq opens that path at every connection attempt and reads it from the
// start (checked with pg_dump -j and pg_restore -j, whose workers are forked and share
// it). Close releases the parent's copy once the child is started or done.
type Child struct {
	Conninfo string
	Env      []string
	Files    []*os.File
}

// Close closes the files held for the child.
func (ch *Child) Close() {
	for _, f := range ch.Files {
		f.Close()
	}
}

// ChildProcess prepares a child process that connects with c (see Child).
func (c *Config) ChildProcess() (*Child, error) {
	p := make(map[string]string, len(c.params))
	for k, v := range c.params {
		if k != "password" && k != "passfile" {
			p[k] = v
		}
	}
	p["dbname"] = c.pgx.Database
	if _, ok := p["application_name"]; !ok {
		p["application_name"] = "tsmigrate"
	}
	childKeepalives(p)
	ch := &Child{Conninfo: formatKeywords(p), Env: ChildEnv()}
	if c.pgx.Password == "" {
		return ch, nil
	}
	env := ch.Env[:0]
	for _, kv := range ch.Env {
		if !strings.HasPrefix(kv, "PGPASSFILE=") {
			env = append(env, kv)
		}
	}
	f, err := memPassfile("*:*:*:*:" + escapePassfile(c.pgx.Password) + "\n")
	if err != nil {
		return nil, fmt.Errorf("make the private passfile: %w", err)
	}
	ch.Env = append(env, "PGPASSFILE=/proc/self/fd/3")
	ch.Files = []*os.File{f}
	return ch, nil
}

// memPassfile is a passfile holding content, in memory only: a sealed memfd, mode 0600
// (libpq ignores a passfile that others may read).
func memPassfile(content string) (*os.File, error) {
	fd, err := unix.MemfdCreate("tsmigrate-pgpass", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "tsmigrate-pgpass")
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func escapePassfile(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return strings.ReplaceAll(s, `:`, `\:`)
}

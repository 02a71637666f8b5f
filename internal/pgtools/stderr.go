package pgtools

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// A program's stderr is a Unix stream socket, not a pipe, so that its lines can be
// told apart by the process that wrote them. pg_dump -j and pg_restore -j fork their
// workers, which share the leader's stderr, and PostgreSQL's frontend logger writes
// one message in several write() calls ("pg_dump:", " ", "error: ", then the text
// with its newline: pg_log_generic_v, PostgreSQL 12 to 18; seen with strace on 17),
// so in a pipe the messages of two processes interleave inside a line, and no reader
// can always tell which piece is whose. With SO_PASSCRED on the reading end, Linux
// gives each read the credentials of the writing process and never joins the data of
// two writers in one read (net/unix/af_unix.c, unix_stream_read_generic: "Never glue
// messages from different writers"), so each process's bytes are read apart, in its
// order, and cut into lines on their own.

// stderrSocket makes the two ends of a program's stderr: child, for the program, and
// the reading end, which receives each writer's credentials.
func stderrSocket() (child *os.File, reader *net.UnixConn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("make a socket for stderr: %w", err)
	}
	// Before the program starts: a write is marked with its writer only when the
	// reading end asks for it at the time of the write.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("make a socket for stderr: SO_PASSCRED: %w", err)
	}
	rf := os.NewFile(uintptr(fds[0]), "stderr reader")
	fc, err := net.FileConn(rf) // a duplicate, in Go's poller
	rf.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("make a socket for stderr: %w", err)
	}
	return os.NewFile(uintptr(fds[1]), "stderr"), fc.(*net.UnixConn), nil
}

// readWriters hands every line read from r to line (without its newline), with the
// process id of the process that wrote it, until every writer has closed its end.
// Each process's lines are whole and in the order it wrote them, whatever the other
// processes wrote meanwhile; a line is handed over once its newline is read, and one
// left without a newline at the end (a killed writer's) then. pid is 0 where the
// kernel gave no credentials.
func readWriters(r *net.UnixConn, line func(pid int, s string)) error {
	buf := make([]byte, 64*1024)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	partial := map[int][]byte{} // each writer's line so far
	var err error
	for {
		var n, oobn int
		n, oobn, _, _, err = r.ReadMsgUnix(buf, oob)
		if n == 0 {
			break
		}
		pid := writer(oob[:oobn])
		data := append(partial[pid], buf[:n]...)
		for i := bytes.IndexByte(data, '\n'); i >= 0; i = bytes.IndexByte(data, '\n') {
			line(pid, strings.TrimSuffix(string(data[:i]), "\r"))
			data = data[i+1:]
		}
		if len(data) > 0 {
			partial[pid] = data
		} else {
			delete(partial, pid)
		}
		if err != nil {
			break
		}
	}
	for _, pid := range slices.Sorted(maps.Keys(partial)) {
		line(pid, strings.TrimSuffix(string(partial[pid]), "\r"))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read stderr: %w", err)
	}
	return nil
}

// writer is the process id in the credentials of one read (0 when there are none).
func writer(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}

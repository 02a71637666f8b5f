// Package scratch makes the temporary directories a run writes into (schema dumps,
// data dumps, pg_restore's lists), and removes those that runs killed with SIGKILL
// (or lost with their machine) left behind. Each directory holds a lock file that the
// process owning the directory keeps locked (flock) while it lives; the kernel drops
// the lock when the process ends, whatever way. RemoveStale takes the directories
// whose lock nobody holds: their owner is gone, they are stale.
package scratch

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every directory New makes.
const Prefix = "tsmigrate-"

// LockName is the lock file in each directory.
const LockName = ".tsmigrate-owner"

// Dir is a temporary directory owned by this process.
type Dir struct {
	Path string
	lock *os.File
}

// New makes a directory in os.TempDir() named Prefix+kind+"-" and a random suffix,
// owned by this process until Remove.
func New(kind string) (*Dir, error) {
	path, err := os.MkdirTemp("", Prefix+kind+"-")
	if err != nil {
		return nil, fmt.Errorf("make a temporary directory: %w", err)
	}
	// Locked under another name first, then renamed: RemoveStale never sees the lock
	// file unlocked while its owner lives.
	tmp := filepath.Join(path, LockName+".new")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err == nil {
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			err = os.Rename(tmp, filepath.Join(path, LockName))
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(path)
		return nil, fmt.Errorf("lock the temporary directory %s: %w", path, err)
	}
	return &Dir{Path: path, lock: f}, nil
}

// Remove removes the directory and everything in it.
func (d *Dir) Remove() {
	os.RemoveAll(d.Path)
	d.lock.Close()
}

// RemoveStale removes the directories New made in os.TempDir() whose owning process
// is gone, and returns their paths. A directory of another user, one without a lock
// file (made by hand, or by a tsmigrate before the lock files), or one whose lock is
// held is left alone.
func RemoveStale() []string {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*"))
	var removed []string
	for _, dir := range dirs {
		st, err := os.Lstat(dir)
		if err != nil || !st.IsDir() {
			continue
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != os.Getuid() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, LockName))
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if os.RemoveAll(dir) == nil {
				removed = append(removed, dir)
			}
		}
		f.Close()
	}
	return removed
}

package testenv

import (
	"testing"
	"time"
)

// Eventually calls check until it returns nil, and fails the test with check's last
// error when wait has passed. For what comes true asynchronously (a server process
// gone, a scheduler started, a line printed, a row written): never a fixed sleep. Give
// wait room for a loaded machine. The checks are 10 ms apart, so that a test that acts
// the moment something happens (kills a run in a phase) still catches it. check may end
// the test itself (t.Fatal) when waiting is pointless.
func Eventually(t testing.TB, wait time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", wait, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

//go:build unix

package outbox

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDir takes the lock Badger takes on its directory (flock), so the checks before
// Badger opens, and Repair's moving of the directory, never run beside a process that
// has the outbox open. A directory that does not exist needs no lock.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("outbox: %s: Another process is using this Badger database (is the agent running? stop it first): %w", dir, err)
	}
	return func() { f.Close() }, nil
}

//go:build unix

package ledger

import (
	"fmt"
	"os"
	"syscall"
)

// mapFilterFile maps a new zeroed file of size bytes in dir and unlinks it: the mapping
// is all that is left of it.
func mapFilterFile(dir string, size int) ([]byte, error) {
	f, err := os.CreateTemp(dir, "idfilter-*")
	if err != nil {
		return nil, fmt.Errorf("ledger: id filter file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		return nil, fmt.Errorf("ledger: id filter file: %w", err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("ledger: map id filter file: %w", err)
	}
	return mem, nil
}

func unmapFilter(mem []byte) { _ = syscall.Munmap(mem) }

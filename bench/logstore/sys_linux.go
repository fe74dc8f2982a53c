//go:build linux

package main

import (
	"os"
	"syscall"
)

// fdatasync flushes file data (and only the metadata needed to read it back),
// as bbolt does on Linux.
func fdatasync(f *os.File) error {
	return syscall.Fdatasync(int(f.Fd()))
}

// allocatedBytes is the space a file occupies on disk (preallocated WAL
// segments count in full).
func allocatedBytes(info os.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}

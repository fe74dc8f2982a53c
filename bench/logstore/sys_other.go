//go:build !linux

package main

import "os"

// fdatasync falls back to fsync where fdatasync is not available.
func fdatasync(f *os.File) error { return f.Sync() }

// allocatedBytes falls back to the apparent size.
func allocatedBytes(info os.FileInfo) int64 { return info.Size() }

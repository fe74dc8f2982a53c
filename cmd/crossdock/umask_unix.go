//go:build unix

package main

import "syscall"

// privateFiles makes every file the process creates from here on readable by its owner
// only (raft WAL, ledger tables, pki/, archives): the server's files hold the cluster's
// data, and some libraries (Badger, raft-wal) create theirs 0644.
func privateFiles() { syscall.Umask(0o077) }

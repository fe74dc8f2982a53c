//go:build !unix

package outbox

import "errors"

// freeBytes is not implemented here; the disk check then lets appends through.
func freeBytes(string) (uint64, error) {
	return 0, errors.New("outbox: free space unknown on this platform")
}

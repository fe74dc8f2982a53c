//go:build !unix

package fsutil

import "errors"

// FreeBytes is not implemented here; callers then let writes through.
func FreeBytes(string) (uint64, error) {
	return 0, errors.New("free space unknown on this platform")
}

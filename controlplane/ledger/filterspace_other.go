//go:build !unix

package ledger

import "errors"

func mapFilterFile(string, int) ([]byte, error) {
	return nil, errors.New("ledger: mapped id filters need a unix system")
}

func unmapFilter([]byte) {}

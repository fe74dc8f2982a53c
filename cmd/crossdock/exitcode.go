package main

import (
	"errors"
	"fmt"
)

// exitError ends the command with an exit status other than 1. Its message, when not
// empty, is printed like any error; an empty one means the command said what it had to.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.msg
}

// exitInterrupted is the conventional status of a command stopped by Ctrl-C (128+SIGINT).
const exitInterrupted = 130

// exitStatus is the process exit status for a command's error, and whether to print it.
func exitStatus(err error) (code int, print bool) {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, ee.msg != ""
	}
	return 1, true
}

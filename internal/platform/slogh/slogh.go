// Package slogh adapts hashicorp/go-hclog, which raft and go-plugin log through, to
// log/slog, so the whole process logs key/value pairs through one handler.
package slogh

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// New returns an hclog.Logger that writes to l. Records below min are dropped before
// they are formatted.
func New(l *slog.Logger, name string, min hclog.Level) hclog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return &adapter{l: l, name: name, level: min}
}

type adapter struct {
	l       *slog.Logger
	name    string
	level   hclog.Level
	implied []any
}

var _ hclog.Logger = (*adapter)(nil)

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel, hclog.DefaultLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (a *adapter) Log(level hclog.Level, msg string, args ...any) {
	if level < a.level && level != hclog.NoLevel {
		return
	}
	attrs := make([]any, 0, len(a.implied)+len(args)+2)
	if a.name != "" {
		attrs = append(attrs, "component", a.name)
	}
	attrs = append(attrs, a.implied...)
	attrs = append(attrs, args...)
	a.l.Log(context.Background(), toSlog(level), msg, attrs...)
}

func (a *adapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *adapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *adapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *adapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *adapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *adapter) IsTrace() bool { return a.level <= hclog.Trace }
func (a *adapter) IsDebug() bool { return a.level <= hclog.Debug }
func (a *adapter) IsInfo() bool  { return a.level <= hclog.Info }
func (a *adapter) IsWarn() bool  { return a.level <= hclog.Warn }
func (a *adapter) IsError() bool { return a.level <= hclog.Error }

func (a *adapter) ImpliedArgs() []any { return a.implied }

func (a *adapter) With(args ...any) hclog.Logger {
	c := *a
	c.implied = append(append([]any(nil), a.implied...), args...)
	return &c
}

func (a *adapter) Name() string { return a.name }

func (a *adapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		c.name = c.name + "." + name
	} else {
		c.name = name
	}
	return &c
}

func (a *adapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

func (a *adapter) SetLevel(level hclog.Level) { a.level = level }
func (a *adapter) GetLevel() hclog.Level      { return a.level }

func (a *adapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *adapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writer{a}
}

type writer struct{ a *adapter }

// Write logs one line per call, taking an "[LEVEL]" prefix when the line has one.
func (w writer) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := hclog.Info
	for _, c := range []struct {
		prefix string
		level  hclog.Level
	}{{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info}, {"[WARN]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error}} {
		if strings.HasPrefix(line, c.prefix) {
			level, line = c.level, strings.TrimSpace(strings.TrimPrefix(line, c.prefix))
			break
		}
	}
	w.a.Log(level, line)
	return len(p), nil
}

// String is for debugging.
func (a *adapter) String() string { return fmt.Sprintf("slogh(%s)", a.name) }

package main

import (
	"context"
	"log/slog"
	"time"
)

// flushTracing exports the spans still buffered when a server or agent stops
// (tracing.Setup's shutdown; a no-op when tracing is off), waiting at most 5s for the
// collector.
func flushTracing(shutdown func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		slog.Warn("tracing: spans not exported at shutdown", "err", err)
	}
}

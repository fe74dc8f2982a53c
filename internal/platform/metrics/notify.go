package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// NotifyWhenReady tells systemd (Type=notify units: NOTIFY_SOCKET is set) READY=1
// once ready returns nil, checking every interval until ctx is done. It returns at
// once without NOTIFY_SOCKET. It reports whether READY=1 was sent.
func NotifyWhenReady(ctx context.Context, ready Check, interval time.Duration, logger *slog.Logger) bool {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last string
	for {
		err := ready()
		if err == nil {
			sent, serr := daemon.SdNotify(false, daemon.SdNotifyReady)
			if serr != nil && logger != nil {
				logger.Warn("cannot tell systemd this process is ready (sd_notify READY=1)", "err", serr)
			}
			if sent && logger != nil {
				logger.Info("told systemd this process is ready (READY=1)")
			}
			return sent
		}
		if msg := err.Error(); msg != last && logger != nil {
			logger.Info("not ready yet", "reason", msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// NotifyStopping tells systemd the process is stopping (STOPPING=1); nothing without
// NOTIFY_SOCKET.
func NotifyStopping() { _, _ = daemon.SdNotify(false, daemon.SdNotifyStopping) }

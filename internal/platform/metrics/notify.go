package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
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

// RelayNotify passes the sd_notify messages of a child process on to systemd as this
// process's own, for a supervisor whose child reports readiness: systemd accepts them
// from the main process only with NotifyAccess=main. It returns the socket to give the
// child as NOTIFY_SOCKET (an abstract unix socket, so it needs no writable directory),
// or "" without NOTIFY_SOCKET; stop closes it.
func RelayNotify(logger *slog.Logger) (socket string, stop func(), err error) {
	target := os.Getenv("NOTIFY_SOCKET")
	if target == "" {
		return "", func() {}, nil
	}
	out, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: target, Net: "unixgram"})
	if err != nil {
		return "", nil, fmt.Errorf("sd_notify relay: %w", err)
	}
	name := fmt.Sprintf("@crossdock-notify-%d", os.Getpid())
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		out.Close()
		return "", nil, fmt.Errorf("sd_notify relay: %w", err)
	}
	go func() {
		defer out.Close()
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return // closed
			}
			if _, err := out.Write(buf[:n]); err != nil && logger != nil {
				logger.Warn("cannot pass an sd_notify message on to systemd", "err", err)
			}
		}
	}()
	return name, func() { conn.Close() }, nil
}

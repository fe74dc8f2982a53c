package metrics_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/crossdock/crossdock/internal/platform/metrics"
)

// TestNotifyWhenReadySendsReady listens where systemd would (NOTIFY_SOCKET, a unixgram
// socket) and checks READY=1 arrives only once the check passes.
func TestNotifyWhenReadySendsReady(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)

	var checks atomic.Int32
	ready := func() error {
		if checks.Add(1) < 3 {
			return errors.New("no raft leader known")
		}
		return nil
	}
	done := make(chan bool, 1)
	go func() { done <- metrics.NotifyWhenReady(context.Background(), ready, time.Millisecond, nil) }()

	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify message on NOTIFY_SOCKET: %v", err)
	}
	if got := string(buf[:n]); got != "READY=1" {
		t.Errorf("sd_notify sent %q, want READY=1", got)
	}
	if !<-done {
		t.Error("NotifyWhenReady reported READY=1 not sent")
	}
	if c := checks.Load(); c != 3 {
		t.Errorf("READY=1 sent after %d checks, want after the third (the first that passed)", c)
	}
}

// TestNotifyWhenReadyStopsWithContext: a process that never gets ready sends nothing
// and the wait ends with the context.
func TestNotifyWhenReadyStopsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if metrics.NotifyWhenReady(ctx, func() error { return errors.New("never") }, time.Millisecond, nil) {
		t.Fatal("READY=1 sent for a process that never got ready")
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("got a message (%d bytes) though never ready", n)
	}
}

// TestRelayNotify: what a child sends to the relay's socket reaches NOTIFY_SOCKET.
func TestRelayNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	socket, stop, err := metrics.RelayNotify(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	t.Setenv("NOTIFY_SOCKET", socket) // as the child sees it
	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); !ok || err != nil {
		t.Fatalf("child's sd_notify: %v %v", ok, err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("relayed %q, %v; want READY=1", buf[:n], err)
	}
}

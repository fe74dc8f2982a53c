// Package testsvc starts the real services integration tests need (PostgreSQL, MariaDB,
// Tryton) from binaries on PATH, each in its own temporary directory on a free loopback
// port, and stops them when the test ends.
//
// When a binary is missing the test is skipped with a loud message, unless the
// environment sets CROSSDOCK_REQUIRE_INTEGRATION=1 (as .ci/run does after installing
// them), in which case it fails.
package testsvc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// RequireEnv is the variable that turns a missing service into a failure.
const RequireEnv = "CROSSDOCK_REQUIRE_INTEGRATION"

// Missing skips t (or fails it, when RequireEnv=1) because what is not available.
func Missing(t testing.TB, what string, err error) {
	t.Helper()
	msg := fmt.Sprintf("INTEGRATION TEST NOT RUN: %s is not available (%v); install it (see .ci/run) or set %s=1 to make this a failure", what, err, RequireEnv)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// LookPath finds a binary on PATH or in one of the extra directories (globs allowed).
func LookPath(name string, extra ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, pat := range extra {
		matches, _ := filepath.Glob(filepath.Join(pat, name))
		for i := len(matches) - 1; i >= 0; i-- { // newest version sorts last
			if fi, err := os.Stat(matches[i]); err == nil && fi.Mode()&0o111 != 0 {
				return matches[i], nil
			}
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in %v", name, extra)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serviceUser is who a service runs as: the current user, or the named system user when
// running as root (PostgreSQL and MariaDB refuse to run as root).
type serviceUser struct {
	cred     *syscall.Credential
	uid, gid int
}

func userFor(name string) (serviceUser, error) {
	if os.Geteuid() != 0 {
		return serviceUser{uid: os.Getuid(), gid: os.Getgid()}, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return serviceUser{}, fmt.Errorf("running as root and there is no %q user to run the service as: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return serviceUser{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid: uid, gid: gid}, nil
}

func (u serviceUser) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if u.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
	}
	return cmd
}

// serviceDir makes a directory the service user owns, removed when t ends. It is not
// under t.TempDir because that directory's parents are private to the test's user.
func serviceDir(t testing.TB, u serviceUser, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "crossdock-"+prefix+"-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("chmod: %v", err)
	}
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		t.Fatalf("chown %s: %v", dir, err)
	}
	return dir
}

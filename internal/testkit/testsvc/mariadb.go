package testsvc

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the test connects to check readiness

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// MariaDB is a running MariaDB server owned by a test.
type MariaDB struct {
	Port   int
	Dir    string
	Socket string
	// DSN (go-sql-driver/mysql) connects as root, over TCP without a password, to the
	// database "test", which exists and is empty.
	DSN string
}

var mariaDirs = []string{"/usr/sbin", "/usr/local/mysql/bin", "/usr/local/mysql/scripts"}

// StartMariaDB runs mariadb-install-db and mariadbd (or mysqld) in a temporary
// directory on a free port.
func StartMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	server, err := LookPath("mariadbd", mariaDirs...)
	if err != nil {
		if server, err = LookPath("mysqld", mariaDirs...); err != nil {
			Missing(t, "MariaDB", err)
		}
	}
	install, err := LookPath("mariadb-install-db", mariaDirs...)
	if err != nil {
		if install, err = LookPath("mysql_install_db", mariaDirs...); err != nil {
			Missing(t, "MariaDB", err)
		}
	}
	u, err := userFor("mysql")
	if err != nil {
		Missing(t, "MariaDB", err)
	}
	dir := serviceDir(t, u, "mariadb")
	data := filepath.Join(dir, "data")
	cnf := filepath.Join(dir, "my.cnf")
	port := FreePort(t)
	sock := filepath.Join(dir, "mysqld.sock")
	// A minimal, fast, test-only server: no fsync, small buffers, root without a
	// password over TCP on loopback only.
	conf := fmt.Sprintf(`[mysqld]
datadir=%s
socket=%s
port=%d
bind-address=127.0.0.1
pid-file=%s
log-error=%s
innodb_flush_log_at_trx_commit=0
innodb_doublewrite=0
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
sync_binlog=0
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
`, data, sock, port, filepath.Join(dir, "mysqld.pid"), filepath.Join(dir, "error.log"))
	if err := os.WriteFile(cnf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(cnf, u.uid, u.gid)
	inst := u.command(install, "--defaults-file="+cnf, "--auth-root-authentication-method=normal", "--skip-test-db")
	inst.Dir = dir
	if out, err := inst.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	srv := u.command(server, "--defaults-file="+cnf)
	logf, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGTERM) // normal shutdown (mariadbd ignores SIGINT)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			srv.Process.Kill()
			<-done
		}
		logf.Close()
	})
	m := &MariaDB{Port: port, Dir: dir, Socket: sock,
		DSN: fmt.Sprintf("root@tcp(127.0.0.1:%d)/test", port)}
	root := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port)
	testutil.WaitFor(t, 60*time.Second, "mariadb accepting connections", func() bool {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("mariadbd exited:\n%s", b)
		default:
		}
		db, err := sql.Open("mysql", root)
		if err != nil {
			return false
		}
		defer db.Close()
		_, err = db.Exec("CREATE DATABASE IF NOT EXISTS test")
		return err == nil
	})
	return m
}

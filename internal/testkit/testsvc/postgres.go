package testsvc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// PostgresOptions tune a test PostgreSQL.
type PostgresOptions struct {
	// Logical sets wal_level=logical with room for replication slots (for pgcdc).
	Logical bool
	// Settings are extra "name=value" server settings.
	Settings []string
}

// Postgres is a running PostgreSQL server owned by a test.
type Postgres struct {
	Host string // the Unix socket directory
	Port int
	Dir  string
	// DSN connects as the superuser "postgres" to database "postgres" over TCP.
	DSN string
	// ReplicationDSN is DSN with replication=database.
	ReplicationDSN string
}

var pgDirs = []string{"/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin"}

// StartPostgres runs initdb and postgres in a temporary directory on a free port.
func StartPostgres(t testing.TB, opts PostgresOptions) *Postgres {
	t.Helper()
	initdb, err := LookPath("initdb", pgDirs...)
	if err != nil {
		Missing(t, "PostgreSQL", err)
	}
	postgres, err := LookPath("postgres", pgDirs...)
	if err != nil {
		Missing(t, "PostgreSQL", err)
	}
	u, err := userFor("postgres")
	if err != nil {
		Missing(t, "PostgreSQL", err)
	}
	dir := serviceDir(t, u, "pg")
	data := filepath.Join(dir, "data")
	cmd := u.command(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := FreePort(t)
	args := []string{"-D", data, "-p", fmt.Sprint(port), "-k", dir, "-h", "127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"}
	if opts.Logical {
		args = append(args, "-c", "wal_level=logical", "-c", "max_replication_slots=10", "-c", "max_wal_senders=10")
	}
	for _, s := range opts.Settings {
		args = append(args, "-c", s)
	}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(logf.Name(), u.uid, u.gid)
	srv := u.command(postgres, args...)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	t.Cleanup(func() {
		srv.Process.Signal(os.Interrupt) // fast shutdown
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			srv.Process.Kill()
			<-done
		}
		logf.Close()
	})
	pg := &Postgres{Host: dir, Port: port, Dir: dir,
		DSN:            fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		ReplicationDSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&replication=database", port)}
	sock := filepath.Join(dir, fmt.Sprintf(".s.PGSQL.%d", port))
	testutil.WaitFor(t, 30*time.Second, "postgres accepting connections", func() bool {
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("postgres exited:\n%s", b)
		default:
		}
		_, err := os.Stat(sock)
		return err == nil && logHas(logf.Name(), "ready to accept connections")
	})
	return pg
}

func logHas(path, s string) bool {
	b, _ := os.ReadFile(path)
	return strings.Contains(string(b), s)
}

// Context returns a context for test setup calls, cancelled when t ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

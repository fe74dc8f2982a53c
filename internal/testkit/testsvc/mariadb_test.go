package testsvc

import (
	"database/sql"
	"strings"
	"testing"
)

func TestStartMariaDB(t *testing.T) {
	m := StartMariaDB(t)
	db, err := sql.Open("mysql", m.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var version string
	if err := db.QueryRow("SELECT VERSION()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ToLower(version), "mariadb") {
		t.Fatalf("version = %q, want a MariaDB server", version)
	}
	if _, err := db.Exec("CREATE TABLE t (id INT PRIMARY KEY)"); err != nil {
		t.Fatalf("create table in the test database: %v", err)
	}
}

package sql

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"modernc.org/sqlite"
)

// dialect is what differs between the databases.
type dialect struct {
	name       string
	driverName string // database/sql driver
	// placeholder returns the n-th (1-based) bind parameter.
	placeholder func(n int) string
	// trackExpr is the expression selected to read a tracking column's value exactly as
	// stored, so it can be bound back and compared without conversion.
	trackExpr func(col string) string
	// olderThan is a condition: col is older than the database's clock minus d.
	olderThan func(col string, d time.Duration) string
	// insertApplied inserts an event id into the idempotency table, doing nothing when
	// it is there already (RowsAffected 0).
	insertApplied func(table string, ph func(int) string) string
	createApplied func(table string) string
}

var dialects = map[string]*dialect{
	"postgres": {
		name: "postgres", driverName: "pgx",
		placeholder: func(n int) string { return fmt.Sprintf("$%d", n) },
		trackExpr:   func(col string) string { return col },
		olderThan: func(col string, d time.Duration) string {
			return fmt.Sprintf("%s < now() - interval '%d microseconds'", col, d.Microseconds())
		},
		insertApplied: func(t string, ph func(int) string) string {
			return fmt.Sprintf("INSERT INTO %s (event_id, ref, applied_at) VALUES (%s, %s, now()) ON CONFLICT (event_id) DO NOTHING", t, ph(1), ph(2))
		},
		createApplied: func(t string) string {
			return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (event_id varchar(128) PRIMARY KEY, ref text NOT NULL DEFAULT '', applied_at timestamptz NOT NULL)", t)
		},
	},
	"mysql": {
		name: "mysql", driverName: "mysql",
		placeholder: func(int) string { return "?" },
		trackExpr:   func(col string) string { return col },
		olderThan: func(col string, d time.Duration) string {
			return fmt.Sprintf("%s < NOW(6) - INTERVAL %d MICROSECOND", col, d.Microseconds())
		},
		insertApplied: func(t string, ph func(int) string) string {
			return fmt.Sprintf("INSERT IGNORE INTO %s (event_id, ref, applied_at) VALUES (%s, %s, NOW(6))", t, ph(1), ph(2))
		},
		createApplied: func(t string) string {
			return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (event_id VARCHAR(128) NOT NULL PRIMARY KEY, ref TEXT NOT NULL, applied_at DATETIME(6) NOT NULL)", t)
		},
	},
	"sqlite": {
		name: "sqlite", driverName: "sqlite",
		placeholder: func(int) string { return "?" },
		// Unary + keeps the stored value and its storage class (text stays text) and
		// hides the declared type, so the driver does not turn text into time.Time.
		trackExpr: func(col string) string { return "+" + col },
		// Timestamps stored as text in CURRENT_TIMESTAMP's format, UTC.
		olderThan: func(col string, d time.Duration) string {
			return fmt.Sprintf("%s < strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-%.6f seconds')", col, d.Seconds())
		},
		insertApplied: func(t string, ph func(int) string) string {
			return fmt.Sprintf("INSERT OR IGNORE INTO %s (event_id, ref, applied_at) VALUES (%s, %s, strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now'))", t, ph(1), ph(2))
		},
		createApplied: func(t string) string {
			return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (event_id TEXT PRIMARY KEY, ref TEXT NOT NULL DEFAULT '', applied_at TEXT NOT NULL)", t)
		},
	},
}

func init() { dialects["mariadb"] = dialects["mysql"] }

func driverNames() string { return "postgres, mysql, mariadb, sqlite" }

// isDataError reports whether err is the database refusing the data (a constraint, a
// bad value), which a retry cannot fix.
func isDataError(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return strings.HasPrefix(pg.Code, "22") || strings.HasPrefix(pg.Code, "23")
	}
	var my *mysql.MySQLError
	if errors.As(err, &my) {
		st := string(my.SQLState[:])
		return strings.HasPrefix(st, "22") || strings.HasPrefix(st, "23") ||
			my.Number == 1366 || my.Number == 1292 // incorrect value (strict mode reports HY000)
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		switch lite.Code() & 0xff {
		case 19, 20: // SQLITE_CONSTRAINT, SQLITE_MISMATCH
			return true
		}
	}
	return false
}

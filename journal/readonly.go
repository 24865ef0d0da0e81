package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"time"
)

// ErrNoJournal: OpenReadOnly found no journal file at the path.
var ErrNoJournal = errors.New("journal: no journal")

// OpenReadOnly opens an existing journal for reading only, for commands that
// must change nothing (mrbacd plan). It creates no file or directory and
// applies no migration: a missing file is ErrNoJournal, a journal whose
// schema is older or newer than this build's is refused. Writes through the
// returned DB fail.
//
// When the journal is not in use (no write-ahead log beside it) it is opened
// immutable, so that SQLite does not create the -wal and -shm files a
// read-only WAL connection otherwise needs; when a daemon has it open, those
// files exist already and it is opened read-only alongside the daemon.
func OpenReadOnly(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, fmt.Errorf("open journal: %w: empty path", ErrInvalid)
	}
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open journal %s: %w", path, ErrNoJournal)
		}
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("open journal %s: not a regular file", path)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	if !exists(path+"-wal") || !exists(path+"-shm") {
		q.Set("immutable", "1")
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	sdb.SetMaxOpenConns(2)
	sdb.SetMaxIdleConns(2)
	sdb.SetConnMaxIdleTime(time.Minute)
	db := &DB{sql: sdb, path: path, now: time.Now, d: sqliteDialect, log: slog.Default()}
	v, err := db.SchemaVersion(ctx)
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open journal %s read-only: %w", path, err)
	}
	if want := migrations[len(migrations)-1].Version; v != want {
		sdb.Close()
		return nil, fmt.Errorf("open journal %s read-only: schema version %d, this mrbacd uses %d: start the daemon (or any command that writes) once to migrate it", path, v, want)
	}
	return db, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Marked reports whether MarkOnce(key) was called before, without marking:
// what a dry run uses to tell a new alert from one already sent.
func (db *DB) Marked(ctx context.Context, key string) (bool, error) {
	if key == "" {
		return false, fmt.Errorf("marked: %w: empty key", ErrInvalid)
	}
	var n int
	if err := db.conn().queryRow(ctx, `SELECT COUNT(*) FROM once_marks WHERE mark = ?`, key).Scan(&n); err != nil {
		return false, fmt.Errorf("marked %q: %w", key, err)
	}
	return n > 0, nil
}

package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// The DuckDB schema. readings is the view people query; underneath, the
// per-point rows hold only (ts, series_id, fields), and measurement and tags
// live once per series: appending (ts, key, measurement, tags, fields) per
// point is about half as fast (see DESIGN.md, "Facts measured"). Points of
// a few float fields go to tables of DOUBLE columns instead (floatSchema).
//
// points_json.fields is VARCHAR holding JSON text, cast to JSON by the view:
// the driver re-marshals every value appended to a JSON column, which costs
// more than the rest of the row.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS series (
		series_id   UINTEGER PRIMARY KEY,
		key         VARCHAR NOT NULL UNIQUE,
		measurement VARCHAR NOT NULL,
		tags        JSON NOT NULL,
		field_types JSON NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS points_json (
		ts        TIMESTAMP_NS NOT NULL,
		series_id UINTEGER NOT NULL,
		fields    VARCHAR NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS latest (
		key    VARCHAR PRIMARY KEY,
		ts     TIMESTAMP_NS NOT NULL,
		record JSON NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS dead_letters (
		id       UBIGINT NOT NULL,
		received TIMESTAMP_NS NOT NULL,
		source   VARCHAR NOT NULL,
		origin   VARCHAR NOT NULL,
		line     INTEGER NOT NULL,
		reason   VARCHAR NOT NULL,
		payload  BLOB NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS flush_checkpoint (
		id           INTEGER PRIMARY KEY,
		wal_position UBIGINT NOT NULL,
		flushed_at   TIMESTAMP NOT NULL)`,
	`INSERT INTO flush_checkpoint VALUES (1, 0, now()) ON CONFLICT DO NOTHING`,
}

// migrateSchema brings a database of an earlier agent to the current
// schema before it is created: the points table of before the float tables
// becomes points_json (points is now a view over all point tables).
var migrateSchema = []string{
	`DROP VIEW IF EXISTS readings`,
	`ALTER TABLE points RENAME TO points_json`,
}

// rowGroupSize is DuckDB's row group size for the database (its default is
// 122,880 rows). A transaction that appends at least a row group's worth
// has DuckDB write its rows straight to the database file ("optimistic
// writes"), with only a pointer in DuckDB's own WAL; a smaller one is
// written to that WAL at COMMIT and again at the next checkpoint. A flush
// holds at most MaxFlushRows (125,000) readings, which after dedupe often
// fell short of a default row group. Each row group also costs a fixed
// amount to compress (a new segment per column, an FSST symbol table):
// recovering a 1 GiB WAL took 5-10% less CPU with 65,536 than with 16,384
// (three alternating runs each) and peaked 50 MB lower. Smaller groups than
// the default add zone maps, which suit time-range queries.
const rowGroupSize = 65536

// openDuckDB opens the database file with the edge-friendly limits applied to
// every connection, creates the schema, and returns the pool.
func openDuckDB(path string, memoryLimit string, threads int, exportDir string) (*sql.DB, error) {
	tuneMalloc()
	q := url.Values{}
	if memoryLimit != "" {
		q.Set("memory_limit", memoryLimit)
	}
	if threads > 0 {
		q.Set("threads", strconv.Itoa(threads))
	}
	dsn := ""
	if len(q) > 0 {
		dsn += "?" + q.Encode()
	}
	// The file is attached rather than opened, for ROW_GROUP_SIZE (see
	// rowGroupSize); every connection of the pool then makes it its default.
	attach := fmt.Sprintf("ATTACH '%s' AS fpagent (ROW_GROUP_SIZE %d)", strings.ReplaceAll(path, "'", "''"), rowGroupSize)
	// Set by the first connection, which the setup below makes before the
	// pool is anyone else's: later connections only switch to the file.
	var attached bool
	connector, err := duckdb.NewConnector(dsn, func(ex driver.ExecerContext) error {
		if !attached {
			if _, err := ex.ExecContext(context.Background(), attach, nil); err != nil {
				return err
			}
			attached = true
		}
		_, err := ex.ExecContext(context.Background(), "USE fpagent", nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open DuckDB database %s: %w", path, err)
	}
	db := sql.OpenDB(connector)
	// Nothing in the agent reads or writes files through SQL but Export:
	// closing that door, except for the export directory, is a last guard
	// behind the admin API's read-only query checks. Both settings are
	// global and the second cannot be undone.
	setup := []string{}
	if exportDir != "" {
		abs, err := filepath.Abs(exportDir)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("export directory %s: %w", exportDir, err)
		}
		setup = append(setup, fmt.Sprintf("SET allowed_directories = ['%s/']", strings.ReplaceAll(filepath.Clean(abs), "'", "''")))
	}
	setup = append(setup, "SET enable_external_access = false")
	var oldPoints int
	if err := db.QueryRow(`SELECT count(*) FROM duckdb_tables() WHERE database_name = 'fpagent' AND table_name = 'points'`).Scan(&oldPoints); err != nil {
		db.Close()
		return nil, fmt.Errorf("read the schema of DuckDB database %s: %w", path, err)
	}
	if oldPoints > 0 {
		setup = append(setup, migrateSchema...)
	}
	setup = append(setup, schema...)
	for _, stmt := range append(setup, floatSchema()...) {
		if _, err := db.Exec(stmt); err != nil {
			db.Close()
			return nil, fmt.Errorf("set up DuckDB database %s (%s): %w", path, firstLine(stmt), err)
		}
	}
	var external bool
	if err := db.QueryRow(`SELECT current_setting('enable_external_access')`).Scan(&external); err != nil || external {
		db.Close()
		return nil, fmt.Errorf("DuckDB database %s: external access is still on (%v); refusing to serve SQL", path, err)
	}
	return db, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// seriesInfo is what the flusher knows of one series.
type seriesInfo struct {
	id          uint32
	key         string
	measurement string
	tagsJSON    []byte
	// maxFlushed is the newest timestamp of this series in DuckDB, or a
	// value at least as large: a point at or below it may be a rewrite of a
	// stored point and takes the slow path (delete, then append).
	maxFlushed int64
	// prevFlushed is maxFlushed before the batch flushedGen moved it.
	prevFlushed int64
	flushedGen  uint64
	// batchGen and batchMax track the newest timestamp in the flush being
	// built, to find points written twice within one flush.
	batchGen uint64
	batchMax int64
	latest   int // index into the flush's latest rows, valid for batchGen
	// types is the kind of each field seen in this series (line protocol
	// tells integer from unsigned; JSON cannot), kept in series.field_types.
	types        map[string]Kind
	shape        []fieldShape // the fields of its last point (appendFieldsJSONTyped)
	typesChanged bool
	typesGen     uint64
	backwardsGen uint64 // the batch in which it went back in time, if any
	createdGen   uint64 // the batch that created it: its latest row is inserted, not updated
	// floatNames are the fields of the series' first point when they were
	// all floats (series.float_names): points with exactly these go to the
	// DOUBLE table of their number (see floats.go).
	floatNames []string
	// floatKinds: types holds floatNames as floats. A point rendered as
	// JSON may change a kind, and the next DOUBLE row notes them again.
	floatKinds bool
}

// loadSeries reads every series and the newest timestamp stored; the
// latter stands in for each series' own maximum until the series is flushed.
func loadSeries(ctx context.Context, db *sql.DB) (map[string]*seriesInfo, uint32, error) {
	// From the tables: the points view joins series for the DOUBLE rows.
	parts := make([]string, 0, maxFloatFields+1)
	for _, t := range pointTables {
		parts = append(parts, "SELECT max(ts) AS m FROM "+t)
	}
	var maxTS sql.NullTime
	if err := db.QueryRowContext(ctx, `SELECT max(m) FROM (`+strings.Join(parts, " UNION ALL ")+`)`).Scan(&maxTS); err != nil {
		return nil, 0, fmt.Errorf("read newest point time: %w", err)
	}
	floor := int64(math.MinInt64)
	if maxTS.Valid {
		floor = maxTS.Time.UnixNano()
	}
	rows, err := db.QueryContext(ctx, `SELECT series_id, key, measurement, tags::VARCHAR, field_types::VARCHAR, float_names FROM series`)
	if err != nil {
		return nil, 0, fmt.Errorf("read series: %w", err)
	}
	defer rows.Close()
	m := make(map[string]*seriesInfo)
	var next uint32 = 1
	for rows.Next() {
		s := &seriesInfo{maxFlushed: floor}
		var tags, types string
		var names any // NULL or a list
		if err := rows.Scan(&s.id, &s.key, &s.measurement, &tags, &types, &names); err != nil {
			return nil, 0, fmt.Errorf("read series: %w", err)
		}
		list, _ := names.([]any)
		for _, n := range list {
			name, ok := n.(string)
			if !ok {
				return nil, 0, fmt.Errorf("read series %d: float_names holds %T, want strings", s.id, n)
			}
			s.floatNames = append(s.floatNames, name)
		}
		s.tagsJSON = []byte(tags)
		s.types = parseTypes(types)
		m[s.key] = s
		next = max(next, s.id+1)
	}
	return m, next, rows.Err()
}

// parseTypes reads series.field_types back; what it cannot read is
// relearned from the next points.
func parseTypes(js string) map[string]Kind {
	var m map[string]string
	if json.Unmarshal([]byte(js), &m) != nil {
		return nil
	}
	out := make(map[string]Kind, len(m))
	for k, v := range m {
		for kind := KindFloat; kind <= KindBool; kind++ {
			if kind.String() == v {
				out[k] = kind
			}
		}
	}
	return out
}

func readCheckpoint(ctx context.Context, db *sql.DB) (uint64, error) {
	var pos uint64
	err := db.QueryRowContext(ctx, `SELECT wal_position FROM flush_checkpoint WHERE id = 1`).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("read flush checkpoint: %w", err)
	}
	return pos, nil
}

// writer owns the one connection the flusher writes through.
type writer struct {
	conn   *sql.Conn
	stmts  map[string]*sql.Stmt // prepared on conn: see exec
	points *pointsFunc
}

// exec runs one of the flush's fixed statements, prepared once per
// connection: DuckDB parses and plans a statement in about a millisecond,
// which a flush of a thousand readings would pay several times over.
func (w *writer) exec(ctx context.Context, query string, args ...any) error {
	st := w.stmts[query]
	if st == nil {
		var err error
		if st, err = w.conn.PrepareContext(ctx, query); err != nil {
			return err
		}
		if w.stmts == nil {
			w.stmts = make(map[string]*sql.Stmt)
		}
		w.stmts[query] = st
	}
	_, err := st.ExecContext(ctx, args...)
	return err
}

func newWriter(ctx context.Context, db *sql.DB, points *pointsFunc) (*writer, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	for _, stmt := range []string{
		`CREATE TEMP TABLE IF NOT EXISTS latest_stage (key VARCHAR, ts TIMESTAMP_NS, record VARCHAR, fresh BOOLEAN)`,
		`CREATE TEMP TABLE IF NOT EXISTS rewrite_stage (series_id UINTEGER, ts TIMESTAMP_NS)`,
		`CREATE TEMP TABLE IF NOT EXISTS dead_stage (id UBIGINT)`,
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			conn.Close()
			return nil, fmt.Errorf("prepare flush connection: %w", err)
		}
	}
	return &writer{conn: conn, points: points}, nil
}

func (w *writer) close() error {
	for _, st := range w.stmts {
		st.Close()
	}
	return w.conn.Close()
}

// commit writes one flush in a single transaction: new series, rewritten
// points removed, points appended, latest upserted, dead letters, and the
// checkpoint. Either all of it is in DuckDB afterwards, or none of it.
func (w *writer) commit(ctx context.Context, fb *flushBatch) (err error) {
	if _, err := w.conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return fmt.Errorf("begin flush transaction: %w", err)
	}
	defer func() {
		if err != nil {
			if _, rbErr := w.conn.ExecContext(context.Background(), "ROLLBACK"); rbErr != nil {
				err = errors.Join(err, fmt.Errorf("roll back flush: %w", rbErr))
			}
		}
	}()
	err = w.conn.Raw(func(dc any) error {
		conn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("unexpected DuckDB driver connection %T", dc)
		}
		return w.appendAll(conn, fb)
	})
	if err != nil {
		return err
	}
	for n, table := range pointTables {
		if fb.rewriteIn&(1<<n) == 0 {
			continue
		}
		if _, err := w.conn.ExecContext(ctx, fmt.Sprintf(`DELETE FROM %[1]s USING rewrite_stage r
			WHERE %[1]s.series_id = r.series_id AND %[1]s.ts = r.ts
			AND %[1]s.ts BETWEEN ? AND ?`, table), time.Unix(0, fb.rewriteMin).UTC(), time.Unix(0, fb.rewriteMax).UTC()); err != nil {
			return fmt.Errorf("remove rewritten points from %s: %w", table, err)
		}
	}
	if err := w.insertPoints(ctx, fb); err != nil {
		return err
	}
	if len(fb.rejects) > 0 {
		if _, err := w.conn.ExecContext(ctx, `DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_stage)`); err != nil {
			return fmt.Errorf("remove dead letters stored before: %w", err)
		}
		if err := w.conn.Raw(func(dc any) error { return appendDeadLetters(dc.(driver.Conn), fb) }); err != nil {
			return err
		}
	}
	// Every series has its row in latest from the flush that created it on:
	// the rows of older series are updated in place, which costs DuckDB a
	// fifth of an INSERT … ON CONFLICT; only new series are inserted.
	if len(fb.latest) > len(fb.newSeries) {
		if err := w.exec(ctx, `UPDATE latest SET ts = s.ts, record = s.record::JSON
			FROM latest_stage s
			WHERE NOT s.fresh AND latest.key = s.key AND s.ts >= latest.ts`); err != nil {
			return fmt.Errorf("update latest: %w", err)
		}
	}
	if len(fb.newSeries) > 0 {
		if err := w.exec(ctx, `INSERT INTO latest
			SELECT key, ts, record::JSON FROM latest_stage WHERE fresh
			ON CONFLICT (key) DO UPDATE SET ts = excluded.ts, record = excluded.record
			WHERE excluded.ts >= latest.ts`); err != nil {
			return fmt.Errorf("insert into latest: %w", err)
		}
	}
	// The staging tables are the connection's own; only those filled in
	// this transaction need clearing (a rollback empties them anyway).
	for _, c := range []struct {
		used bool
		stmt string
	}{{len(fb.latest) > 0, `DELETE FROM latest_stage`}, {len(fb.rewrites) > 0, `DELETE FROM rewrite_stage`}, {len(fb.rejects) > 0, `DELETE FROM dead_stage`}} {
		if !c.used {
			continue
		}
		if err := w.exec(ctx, c.stmt); err != nil {
			return fmt.Errorf("clear flush staging: %w", err)
		}
	}
	for _, t := range fb.types {
		if t.isNew {
			continue
		}
		if _, err := w.conn.ExecContext(ctx, `UPDATE series SET field_types = ?::JSON WHERE series_id = ?`, string(t.json), t.id); err != nil {
			return fmt.Errorf("update field types of series %d: %w", t.id, err)
		}
	}
	if err := w.exec(ctx, `UPDATE flush_checkpoint SET wal_position = ?, flushed_at = now() WHERE id = 1`, fb.lastPos); err != nil {
		return fmt.Errorf("write flush checkpoint: %w", err)
	}
	if _, err := w.conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit flush: %w", err)
	}
	return nil
}

// appendAll appends everything but the points: they must follow the removal
// of the points they rewrite.
func (w *writer) appendAll(conn driver.Conn, fb *flushBatch) error {
	if len(fb.newSeries) > 0 {
		types := make(map[uint32][]byte, len(fb.newSeries))
		for _, t := range fb.types {
			if t.isNew {
				types[t.id] = t.json
			}
		}
		err := withAppender(conn, "series", func(a *duckdb.Appender) error {
			for _, s := range fb.newSeries {
				ft := types[s.id]
				if ft == nil {
					ft = []byte("{}")
				}
				var names any // NULL: the series' points are JSON
				if s.floatNames != nil {
					names = s.floatNames
				}
				if err := a.AppendRow(s.id, s.key, s.measurement, json.RawMessage(s.tagsJSON), json.RawMessage(ft), names); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("append new series: %w", err)
		}
	}
	if len(fb.rewrites) > 0 {
		err := withAppender(conn, "rewrite_stage", func(a *duckdb.Appender) error {
			for _, r := range fb.rewrites {
				if err := a.AppendRow(r.id, time.Unix(0, r.ts).UTC()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("stage rewritten points: %w", err)
		}
	}
	if len(fb.latest) > 0 {
		err := withAppender(conn, "latest_stage", func(a *duckdb.Appender) error {
			var rec, floatFields []byte
			for _, l := range fb.latest {
				r := &fb.rows[l.row]
				var fields []byte
				if r.width > 0 {
					floatFields = l.series.appendFloatFieldsJSON(floatFields[:0], fb.floats[r.fields.off:r.fields.end])
					fields = floatFields
				} else {
					fields = fb.arena[r.fields.off:r.fields.end]
				}
				rec = appendRecordJSON(rec[:0], l.series, fields, l.ts)
				if err := a.AppendRow(l.series.key, time.Unix(0, l.ts).UTC(), rec, l.series.createdGen == fb.gen); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("stage latest records: %w", err)
		}
	}
	if len(fb.rejects) > 0 {
		err := withAppender(conn, "dead_stage", func(a *duckdb.Appender) error {
			for i := range fb.rejects {
				if err := a.AppendRow(fb.rejectIDs[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("stage dead letters: %w", err)
		}
	}
	return nil
}

// appendDeadLetters appends the batch's rejects, after the removal of the
// same rejects stored before (a redelivered MQTT message, say).
func appendDeadLetters(conn driver.Conn, fb *flushBatch) error {
	err := withAppender(conn, "dead_letters", func(a *duckdb.Appender) error {
		for i, r := range fb.rejects {
			if fb.rejectIDs[i] == 0 {
				continue // a later copy in this batch replaces it
			}
			if err := a.AppendRow(fb.rejectIDs[i], time.Unix(0, r.Time).UTC(), r.Source, r.Origin, int32(min(r.Line, math.MaxInt32)), r.Reason, r.Payload); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append dead letters: %w", err)
	}
	return nil
}

// insertPoints inserts the batch's live rows through the flush's table
// function (see pointsFunc).
func (w *writer) insertPoints(ctx context.Context, fb *flushBatch) error {
	w.points.set(fb)
	defer w.points.set(nil)
	for width, n := range fb.widths {
		if n == 0 {
			continue
		}
		if _, err := w.conn.ExecContext(ctx, w.points.insert[width]); err != nil {
			return fmt.Errorf("insert points into %s: %w", pointTables[width], err)
		}
	}
	return nil
}

func withAppender(conn driver.Conn, table string, fn func(*duckdb.Appender) error) error {
	a, err := duckdb.NewAppenderFromConn(conn, "", table)
	if err != nil {
		return err
	}
	if err := fn(a); err != nil {
		return errors.Join(err, a.Close())
	}
	return a.Close()
}

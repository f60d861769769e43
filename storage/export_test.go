package storage

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// A day's history written to Parquet reads back, with another DuckDB, as the
// same rows the readings view holds for that day; other days stay out.
func TestExportRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.ExportDir = filepath.Join(dir, "export")
	s := openTest(t, dir, cfg)
	defer s.Close()
	day := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	var pts []Point
	for i := range 3000 {
		// Every 7 s from 23:00 on the day before: two days touched.
		ts := day.Add(-time.Hour + time.Duration(i)*7*time.Second)
		p := pt(fmt.Sprintf("room,site=s%d", i%5), ts.UnixNano(), float64(i))
		p.Fields = append(p.Fields, Field{"n", IntValue(int64(i))}, Field{"ok", BoolValue(i%2 == 0)}, Field{"s", StringValue("x'y")})
		pts = append(pts, p)
	}
	mustStore(t, s, pts...) // not flushed: Export flushes first

	res, err := s.Export(context.Background(), day, day)
	if err != nil {
		t.Fatal(err)
	}
	file := ExportFile(cfg.ExportDir, day)
	if len(res) != 1 || res[0].File != file || res[0].Day != "2026-11-25" || res[0].Bytes == 0 {
		t.Fatalf("result %+v", res)
	}
	want := queryInt(t, s.DB(), `SELECT count(*) FROM readings WHERE ts >= '2026-11-25' AND ts < '2026-11-26'`)
	if want == 0 || want == 3000 || res[0].Rows != want {
		t.Fatalf("exported %d rows; the day holds %d of 3000", res[0].Rows, want)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}

	// Read back with a separate, in-memory DuckDB.
	c, err := duckdb.NewConnector("", nil)
	if err != nil {
		t.Fatal(err)
	}
	other := sql.OpenDB(c)
	defer other.Close()
	digest := func(db *sql.DB, from string) (n int64, h string) {
		q := `SELECT count(*), md5(string_agg(concat_ws('|', ts, key, measurement, tags::VARCHAR, fields::VARCHAR), ';' ORDER BY ts, key)) FROM ` + from
		if err := db.QueryRow(q).Scan(&n, &h); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n, h
	}
	n1, h1 := digest(s.DB(), `readings WHERE ts >= '2026-11-25' AND ts < '2026-11-26'`)
	n2, h2 := digest(other, `read_parquet('`+filepath.Join(cfg.ExportDir, "*", "*.parquet")+`', hive_partitioning = false)`)
	if n1 != n2 || h1 != h2 {
		t.Fatalf("Parquet holds %d rows (digest %s), DuckDB %d (digest %s)", n2, h2, n1, h1)
	}
	var day2 string
	q := `SELECT DISTINCT day::VARCHAR FROM read_parquet('` + filepath.Join(cfg.ExportDir, "*", "*.parquet") + `', hive_partitioning = true)`
	if err := other.QueryRow(q).Scan(&day2); err != nil || day2 != "2026-11-25" {
		t.Fatalf("hive partition column day = %q, %v", day2, err)
	}

	// Exporting again replaces the file; the export dir is the only place
	// SQL may write to.
	if res, err := s.Export(context.Background(), day, day); err != nil || res[0].Rows != want {
		t.Fatalf("second export: %+v, %v", res, err)
	}
	if _, err := s.DB().Exec(`COPY (SELECT 1) TO '` + filepath.Join(dir, "elsewhere.parquet") + `' (FORMAT parquet)`); err == nil {
		t.Fatal("COPY outside the export directory succeeded")
	}
}

package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"
)

func floatFields(kv ...any) []Field {
	var f []Field
	for i := 0; i < len(kv); i += 2 {
		var v Value
		switch x := kv[i+1].(type) {
		case float64:
			v = FloatValue(x)
		case int:
			v = IntValue(int64(x))
		case string:
			v = StringValue(x)
		}
		f = append(f, Field{Key: kv[i].(string), Value: v})
	}
	return f
}

// Points go to the DOUBLE table of their width when their series began with
// all-float fields and they carry exactly those; every other point to
// points_json. readings shows them alike, and so do the latest records.
func TestFloatTables(t *testing.T) {
	many := make([]any, 0, 2*(maxFloatFields+1))
	for i := range maxFloatFields + 1 {
		many = append(many, fmt.Sprintf("f%02d", i), float64(i)+0.5)
	}
	cases := []struct {
		key    string
		fields []Field
		table  string
	}{
		{"a", floatFields("x", 1.5, "y", -2.25), "points_f2"},
		{"a", floatFields("x", 1e21, "y", 1e-7), "points_f2"},
		{"a", floatFields("x", 3.0), "points_json"},                     // fewer fields
		{"a", floatFields("x", 3.0, "y", 4.0, "z", 5.0), "points_json"}, // more
		{"a", floatFields("x", 3.0, "z", 4.0), "points_json"},           // others
		{"a", floatFields("x", 3, "y", 4.0), "points_json"},             // an integer
		{"a", floatFields("x", 0.1, "y", 0.2), "points_f2"},
		{"a", floatFields("x", math.NaN(), "y", math.Inf(1)), "points_json"}, // null in JSON
		{"b", floatFields("s", "on"), "points_json"},                         // a string first: never floats
		{"b", floatFields("s", 1.0), "points_json"},
		{"c", floatFields("we\"ird\\key", 7.25), "points_f1"},
		{"d", floatFields(many[:2*maxFloatFields]...), fmt.Sprintf("points_f%d", maxFloatFields)},
		{"e", floatFields(many...), "points_json"}, // one field too many
	}
	dir := t.TempDir()
	s := openTest(t, dir, testConfig(dir))
	waitReady(t, s)
	var pts []Point
	for i, c := range cases {
		p := Point{Measurement: "m", Tags: []Tag{{"k", c.key}}, Fields: c.fields, Time: int64(1000 + i)}
		p.Normalize()
		pts = append(pts, p)
		mustStore(t, s, p)
		if i == 3 {
			mustFlush(t, s) // some series known from an earlier flush
		}
	}
	mustFlush(t, s)
	for i, c := range cases {
		p := &pts[i]
		var table string
		var got string
		for _, tb := range pointTables {
			var fields string
			err := s.DB().QueryRow(fmt.Sprintf(`SELECT fields::VARCHAR FROM points p JOIN series s USING (series_id)
				WHERE s.key = ? AND p.ts = make_timestamp_ns(?) AND EXISTS (SELECT 1 FROM %s t WHERE t.series_id = p.series_id AND t.ts = p.ts)`, tb), p.Key, p.Time).Scan(&fields)
			if err == sql.ErrNoRows {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if table != "" {
				t.Errorf("case %d: in %s and %s", i, table, tb)
			}
			table, got = tb, fields
		}
		if table != c.table {
			t.Errorf("case %d (%s %v): in %q, want %q", i, c.key, c.fields, table, c.table)
		}
		// The same values as the agent's own rendering, whatever the text.
		want := string(AppendFieldsJSON(nil, p.Fields))
		if !sameJSON(t, got, want) {
			t.Errorf("case %d: points.fields %s, want %s", i, got, want)
		}
		var rfields string
		if err := s.DB().QueryRow(`SELECT fields::VARCHAR FROM readings WHERE key = ? AND ts = make_timestamp_ns(?)`, p.Key, p.Time).Scan(&rfields); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !sameJSON(t, rfields, want) {
			t.Errorf("case %d: readings.fields %s, want %s", i, rfields, want)
		}
	}
	if n := queryInt(t, s.DB(), `SELECT count(*) FROM readings`); n != int64(len(cases)) {
		t.Errorf("readings holds %d rows, want %d", n, len(cases))
	}
	s.Close()

	// The latest records, read back from DuckDB after a restart, are the
	// agent's own rendering byte for byte, float tables or not.
	s = openTest(t, dir, testConfig(dir))
	defer s.Close()
	waitReady(t, s)
	last := map[string]*Point{}
	for i := range pts {
		last[pts[i].Key] = &pts[i]
	}
	for key, p := range last {
		rec, ok, err := s.Get(context.Background(), key)
		if err != nil || !ok {
			t.Fatalf("Get %s: %v %v", key, ok, err)
		}
		if want := p.AppendJSON(nil); string(rec) != string(want) {
			t.Errorf("latest %s:\n got %s\nwant %s", key, rec, want)
		}
	}
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Errorf("%s: %v", a, err)
		return false
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Errorf("%s: %v", b, err)
		return false
	}
	return reflect.DeepEqual(x, y)
}

// A database of an agent from before the float tables keeps its points: the
// points table becomes points_json and the views cover it.
func TestMigrateToFloatTables(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fpagent.duckdb")
	old, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE series (series_id UINTEGER PRIMARY KEY, key VARCHAR NOT NULL UNIQUE, measurement VARCHAR NOT NULL, tags JSON NOT NULL, field_types JSON NOT NULL)`,
		`CREATE TABLE points (ts TIMESTAMP_NS NOT NULL, series_id UINTEGER NOT NULL, fields VARCHAR NOT NULL)`,
		`CREATE TABLE latest (key VARCHAR PRIMARY KEY, ts TIMESTAMP_NS NOT NULL, record JSON NOT NULL)`,
		`CREATE TABLE flush_checkpoint (id INTEGER PRIMARY KEY, wal_position UBIGINT NOT NULL, flushed_at TIMESTAMP NOT NULL)`,
		`INSERT INTO flush_checkpoint VALUES (1, 0, now())`,
		`CREATE VIEW readings AS SELECT p.ts, s.key, s.measurement, s.tags, p.fields::JSON AS fields, s.field_types FROM points p JOIN series s USING (series_id)`,
		`INSERT INTO series VALUES (1, 'm,k=a', 'm', '{"k":"a"}', '{"v":"float"}')`,
		`INSERT INTO points VALUES (make_timestamp_ns(5), 1, '{"v":1.5}')`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	old.Close()

	s := openTest(t, dir, testConfig(dir))
	defer s.Close()
	waitReady(t, s)
	// The old series has no float names: its points stay JSON.
	mustStore(t, s, pt("m,k=a", 6, 2.5), pt("m,k=b", 7, 3.5))
	mustFlush(t, s)
	for _, c := range []struct {
		q    string
		want int64
	}{
		{`SELECT count(*) FROM readings`, 3},
		{`SELECT count(*) FROM points`, 3},
		{`SELECT count(*) FROM points_json`, 2},
		{`SELECT count(*) FROM points_f1`, 1},
		{`SELECT count(*) FROM readings WHERE key = 'm,k=a' AND (fields->>'v')::DOUBLE IN (1.5, 2.5)`, 2},
	} {
		if got := queryInt(t, s.DB(), c.q); got != c.want {
			t.Errorf("%s: %d, want %d", c.q, got, c.want)
		}
	}
	var tables string
	if err := s.DB().QueryRow(`SELECT string_agg(table_name, ',' ORDER BY table_name) FROM duckdb_tables() WHERE table_name LIKE 'points%'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(","+tables+",", ",points,") {
		t.Errorf("a points table is left: %s", tables)
	}
}

// field_types follows the last kind of each field for series of DOUBLE rows
// too, whose points skip the JSON rendering that notes the kinds.
func TestFloatSeriesFieldTypes(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, testConfig(dir))
	defer s.Close()
	waitReady(t, s)
	steps := []struct {
		v    Value
		want string
	}{
		{FloatValue(1), `{"v":"float"}`},
		{IntValue(2), `{"v":"integer"}`},
		{FloatValue(3), `{"v":"float"}`},
	}
	for i, st := range steps {
		mustStore(t, s, Point{Measurement: "m", Fields: []Field{{"v", st.v}}, Time: int64(i + 1)})
		mustFlush(t, s)
		var types string
		if err := s.DB().QueryRow(`SELECT field_types::VARCHAR FROM series WHERE key = 'm'`).Scan(&types); err != nil {
			t.Fatal(err)
		}
		if types != st.want {
			t.Errorf("after point %d: field_types %s, want %s", i+1, types, st.want)
		}
	}
	if n := queryInt(t, s.DB(), `SELECT count(*) FROM points_f1`); n != 2 {
		t.Errorf("%d DOUBLE rows, want 2", n)
	}
}

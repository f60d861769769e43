package admin

import (
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.uber.org/goleak"

	"github.com/fpagent/fpagent/internal/version"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

type fakeRecords map[string]string

func (f fakeRecords) Get(_ context.Context, key string) ([]byte, bool, error) {
	r, ok := f[key]
	return []byte(r), ok, nil
}

func testDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", filepath.Join(t.TempDir(), "test.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, stmt := range []string{
		`CREATE TABLE readings (ts TIMESTAMP_NS, key VARCHAR, measurement VARCHAR, fields JSON)`,
		`INSERT INTO readings SELECT TIMESTAMP_NS '2026-01-01 00:00:00' + to_seconds(i), 'cpu,host=a', 'cpu', json_object('v', i) FROM range(50) t(i)`,
		`CREATE TABLE latest (key VARCHAR PRIMARY KEY, record JSON)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func newTestServer(t *testing.T, opt Options) *httptest.Server {
	t.Helper()
	s, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, url string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func post(t *testing.T, url, ctype, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	return do(t, req)
}

func TestHealthReady(t *testing.T) {
	ready, reason := false, "storage recovery: 3 of 10 segments replayed"
	ts := newTestServer(t, Options{Ready: func() (bool, string) { return ready, reason }})
	if code, _, _ := get(t, ts.URL+"/health"); code != 200 {
		t.Fatalf("/health = %d", code)
	}
	code, hdr, body := get(t, ts.URL+"/ready")
	if code != 503 || !strings.Contains(body, reason) || hdr.Get("Retry-After") == "" {
		t.Fatalf("/ready before ready = %d %q", code, body)
	}
	ready = true
	if code, _, _ := get(t, ts.URL+"/ready"); code != 200 {
		t.Fatalf("/ready once ready = %d", code)
	}
	if code, _, body := get(t, ts.URL+"/nope"); code != 404 || !strings.Contains(body, "/stats") {
		t.Fatalf("unknown path = %d %q", code, body)
	}
	if code, _, _ := post(t, ts.URL+"/health", "text/plain", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /health = %d", code)
	}
}

func TestToken(t *testing.T) {
	ts := newTestServer(t, Options{Token: "s3cret"})
	for _, path := range []string{"/health", "/stats", "/api/v1/query?q=SELECT+1"} {
		code, hdr, body := get(t, ts.URL+path)
		if code != 401 || hdr.Get("WWW-Authenticate") == "" || !strings.Contains(body, "Bearer") {
			t.Errorf("%s without token = %d %q", path, code, body)
		}
		if code, _, _ := get(t, ts.URL+path, "Authorization", "Bearer wrong"); code != 401 {
			t.Errorf("%s with a wrong token = %d", path, code)
		}
	}
	if code, _, _ := get(t, ts.URL+"/health", "Authorization", "Bearer s3cret"); code != 200 {
		t.Fatalf("with the token = %d", code)
	}
}

func TestRecords(t *testing.T) {
	recs := fakeRecords{"cpu,host=a": `{"measurement":"cpu"}`, "dev/1/temp": `{"measurement":"temp"}`,
		`room,name=living\ room,path=a/b%c`: `{"measurement":"room"}`}
	ts := newTestServer(t, Options{Records: recs})
	f := func(path string, wantCode int, want string) {
		t.Helper()
		code, hdr, body := get(t, ts.URL+path)
		if code != wantCode || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d %q; want %d %q", path, code, body, wantCode, want)
		}
		if code == 200 && hdr.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: content type %q", path, hdr.Get("Content-Type"))
		}
	}
	f("/api/v1/records/cpu,host=a", 200, `"cpu"`)
	f("/api/v1/records/"+url.PathEscape("cpu,host=a"), 200, `"cpu"`)
	f("/api/v1/records/dev/1/temp", 200, `"temp"`)
	f("/api/v1/records?key="+url.QueryEscape("cpu,host=a"), 200, `"cpu"`)
	f("/api/v1/records/"+url.PathEscape(`room,name=living\ room,path=a/b%c`), 200, `"room"`)
	f("/api/v1/records?key="+url.QueryEscape(`room,name=living\ room,path=a/b%c`), 200, `"room"`)
	f("/api/v1/records/missing", 404, `no record for key \"missing\"`)
	f("/api/v1/records", 400, "name a key")
}

func TestStats(t *testing.T) {
	type storageStats struct {
		CacheSize     int    `json:"cache_size"`
		PendingWrites uint64 `json:"pending_writes"`
	}
	ts := newTestServer(t, Options{
		Version: version.Info{Version: "1.0.0"},
		Started: time.Now().Add(-time.Minute),
		DB:      testDB(t),
		Stats:   func() any { return storageStats{CacheSize: 7, PendingWrites: 3} },
		Inputs:  func() any { return map[string]any{"tcp": map[string]int{"received": 5}} },
	})
	code, _, body := get(t, ts.URL+"/stats")
	if code != 200 {
		t.Fatalf("/stats = %d %s", code, body)
	}
	var out struct {
		CacheSize     int            `json:"cache_size"`
		PendingWrites int            `json:"pending_writes"`
		Uptime        float64        `json:"uptime_seconds"`
		Ready         bool           `json:"ready"`
		Version       version.Info   `json:"version"`
		Inputs        map[string]any `json:"inputs"`
		DuckDB        map[string]any `json:"duckdb"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	if out.CacheSize != 7 || out.PendingWrites != 3 || out.Uptime < 59 || !out.Ready || out.Version.Version != "1.0.0" ||
		out.Inputs["tcp"] == nil || out.DuckDB["version"] == nil || out.DuckDB["database_size"] == nil {
		t.Fatalf("/stats = %s", body)
	}
}

func TestMetricsPassPromlint(t *testing.T) {
	reg := NewRegistry(version.Get())
	ts := newTestServer(t, Options{Gatherer: reg, Register: reg, Ready: func() (bool, string) { return true, "" }})
	get(t, ts.URL+"/health") // so that the request metrics have samples
	code, _, body := get(t, ts.URL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, name := range []string{"fpagent_build_info", "fpagent_ready 1", "fpagent_admin_requests_total", "go_goroutines", "process_start_time_seconds"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestQuery(t *testing.T) {
	db := testDB(t)
	ts := newTestServer(t, Options{DB: db, QueryMaxRows: 20})
	q := func(sql string) string { return ts.URL + "/api/v1/query?q=" + url.QueryEscape(sql) }

	code, _, body := get(t, q("SELECT count(*) AS n, max(key) AS k FROM readings"))
	var res QueryResult
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != 200 {
		t.Fatalf("count = %d %s", code, body)
	}
	if res.Columns[0] != "n" || res.Rows[0][0].(float64) != 50 || res.Rows[0][1] != "cpu,host=a" || res.Truncated {
		t.Fatalf("count = %s", body)
	}

	// The row cap cuts and says so.
	code, _, body = get(t, q("SELECT ts, fields->>'v' AS v FROM readings ORDER BY ts"))
	res = QueryResult{}
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != 200 || res.RowCount != 20 || !res.Truncated || res.MaxRows != 20 {
		t.Fatalf("capped = %d %s", code, body)
	}
	if res.Rows[0][0] != "2026-01-01T00:00:00Z" {
		t.Fatalf("timestamp rendered as %v", res.Rows[0][0])
	}

	// CSV.
	code, hdr, body := get(t, q("SELECT key, fields->>'v' AS v FROM readings ORDER BY ts LIMIT 3")+"&format=csv")
	recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil || code != 200 || len(recs) != 4 || recs[0][0] != "key" || recs[3][1] != "2" || hdr.Get("X-Fpagent-Truncated") != "false" {
		t.Fatalf("csv = %d %q %v", code, body, err)
	}

	// POST as text, as JSON, as a form.
	for _, c := range []struct{ ctype, body string }{
		{"text/plain", "SELECT 42 AS answer"},
		{"application/sql", "select 42 as answer;"},
		{"application/json", `{"q": "SELECT 42 AS answer"}`},
		{"application/x-www-form-urlencoded", "q=" + url.QueryEscape("SELECT 42 AS answer")},
		{"application/x-www-form-urlencoded", "SELECT 42 AS answer"}, // curl -d "SELECT …"
	} {
		code, _, body := post(t, ts.URL+"/api/v1/query", c.ctype, c.body)
		if code != 200 || !strings.Contains(body, `"answer"`) || !strings.Contains(body, "42") {
			t.Errorf("POST %s = %d %s", c.ctype, code, body)
		}
	}

	// Types people meet.
	code, _, body = get(t, q(`SELECT 1::HUGEINT AS h, 1.25::DECIMAL(10,2) AS d, 'nan'::DOUBLE AS n, DATE '2020-01-02' AS dt,
		'a\x01'::BLOB AS b, [1,2] AS l, {'a': 1} AS s, MAP {'k': 'v'} AS m, '{"x":1}'::JSON AS j, NULL AS z`))
	if code != 200 {
		t.Fatalf("types = %d %s", code, body)
	}
	for _, want := range []string{`1.25`, `"2020-01-02"`, `"a\\x01"`, `"k": "v"`, `"x": 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("types: %s lacks %s", body, want)
		}
	}

	// Errors: DuckDB's message, 400.
	code, _, body = get(t, q("SELECT nope FROM readings"))
	if code != 400 || !strings.Contains(body, "nope") {
		t.Fatalf("bad column = %d %s", code, body)
	}
	if code, _, body := get(t, ts.URL+"/api/v1/query"); code != 400 || !strings.Contains(body, "?q=") {
		t.Fatalf("no query = %d %s", code, body)
	}
	if code, _, _ := get(t, q("SELECT 1")+"&format=xml"); code != 400 {
		t.Fatalf("format xml = %d", code)
	}

	// The pool is left clean: no connection stays inside a read-only transaction.
	for range 5 {
		get(t, q("SELECT nope"))
		get(t, q("SELECT 1"))
	}
	if _, err := db.Exec("INSERT INTO latest VALUES ('k', '{}')"); err != nil {
		t.Fatalf("write after queries: %v", err)
	}
}

func TestQueryTimeout(t *testing.T) {
	ts := newTestServer(t, Options{DB: testDB(t), QueryTimeout: 300 * time.Millisecond})
	start := time.Now()
	code, _, body := get(t, ts.URL+"/api/v1/query?q="+url.QueryEscape("SELECT count(*) FROM range(100000000000) a"))
	if code != 503 || !strings.Contains(body, "query_timeout") {
		t.Fatalf("slow query = %d %s", code, body)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("interrupting took %s", el)
	}
	if code, _, _ := get(t, ts.URL+"/api/v1/query?q=SELECT+1"); code != 200 {
		t.Fatalf("query after a timeout = %d", code)
	}
}

func TestQueryBodyLimit(t *testing.T) {
	ts := newTestServer(t, Options{DB: testDB(t), MaxQuerySize: 100})
	code, _, body := post(t, ts.URL+"/api/v1/query", "text/plain", "SELECT "+strings.Repeat("1+", 100)+"1")
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "100 bytes") {
		t.Fatalf("large body = %d %s", code, body)
	}
}

// Each statement that could write, reach files or change the session is refused with 400 and its reason.
func TestQueryRefusals(t *testing.T) {
	if err := os.WriteFile(filepath.Join(t.TempDir(), "x.csv"), []byte("a\n1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, Options{DB: testDB(t)})
	f := func(q, want string) {
		t.Helper()
		code, _, body := post(t, ts.URL+"/api/v1/query", "text/plain", q)
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("%q = %d %s; want 400 with %q", q, code, body, want)
		}
	}
	f("INSERT INTO latest VALUES ('k', '{}')", "INSERT statements are not allowed")
	f("update latest SET record = '{}'", "UPDATE statements are not allowed")
	f("DELETE FROM readings", "DELETE statements")
	f("CREATE TABLE t (a INT)", "CREATE statements")
	f("DROP TABLE readings", "DROP statements")
	f("ALTER TABLE readings ADD COLUMN x INT", "ALTER statements")
	f("ATTACH 'other.db' AS o", "ATTACH statements")
	f("DETACH o", "DETACH statements")
	f("COPY readings TO 'out.csv'", "COPY statements")
	f("COPY (SELECT 1) TO 'out.parquet'", "COPY statements")
	f("EXPORT DATABASE 'dir'", "EXPORT statements")
	f("IMPORT DATABASE 'dir'", "IMPORT statements")
	f("INSTALL httpfs", "INSTALL statements")
	f("LOAD httpfs", "LOAD statements")
	f("SET memory_limit = '10GB'", "SET statements")
	f("RESET memory_limit", "RESET statements")
	f("PRAGMA enable_profiling", "PRAGMA statements")
	f("CALL pragma_version()", "CALL statements")
	f("CHECKPOINT", "CHECKPOINT statements")
	f("VACUUM", "VACUUM statements")
	f("BEGIN; INSERT INTO latest VALUES ('k', '{}'); COMMIT", "3 statements")
	f("SELECT 1; SELECT 2", "2 statements")
	f("SELECT 1; DROP TABLE readings", "2 statements")
	f("SELECT ';'; DROP TABLE readings -- ;", "2 statements")
	f("SELECT * FROM read_csv('x.csv')", "read_csv() reads files")
	f("SELECT * FROM READ_CSV_AUTO('x.csv')", "read_csv_auto() reads files")
	f("SELECT * FROM read_parquet('x.parquet')", "read_parquet() reads files")
	f("SELECT * FROM read_json_auto('x.json')", "read_json_auto() reads files")
	f("SELECT * FROM read_text('/etc/passwd')", "read_text() reads files")
	f("SELECT * FROM read_blob('/etc/passwd')", "read_blob() reads files")
	f("SELECT * FROM glob('/etc/*')", "glob() reads files")
	f("SELECT * FROM parquet_metadata('x.parquet')", "parquet_metadata() reads files")
	f("SELECT * FROM 'x.csv'", `FROM \"x.csv\" reads a file`)
	f("FROM '/etc/passwd.csv'", "reads a file")
	f(`SELECT * FROM "x.parquet"`, "reads a file")
	f("SELECT * FROM (SELECT * FROM 'data/*.csv')", "reads a file")
	f("WITH t AS (SELECT * FROM 'x.csv') SELECT * FROM t", "reads a file")
	f("SELECT (SELECT count(*) FROM 'x.csv')", "reads a file")
	f("DESCRIBE 'x.csv'", "reads a file")
	f("SELECT * FROM query('SELECT 1')", "query() reads files or runs SQL")
	f("SELECT * FROM force_checkpoint()", "force_checkpoint()")
	f("SELECT * FROM duckdb_secrets()", "table function duckdb_secrets() is not allowed")
	f("SELECT nextval('s')", "nextval() changes state")
	// Comments, case and whitespace do not hide anything.
	f("/* hello */ InSeRt\n\tINTO latest VALUES ('k', '{}')", "INSERT statements")
	f("-- just a comment\nDROP TABLE readings", "DROP statements")
	f("/* nested /* comment */ still */ DROP TABLE readings", "DROP statements")
	f("(SELECT 1) ; \n DELETE FROM readings", "2 statements")
	f("SELECT * FROM read_csv /* gap */ ('x.csv')", "read_csv() reads files")
	f(`SELECT * FROM "read_csv"('x.csv')`, "read_csv() reads files")
	f("SELECT * FROM main.read_csv('x.csv')", "read_csv() reads files")
	f("EXPLAIN SELECT 1", "EXPLAIN statements")
	f("WITH t AS (SELECT 1) INSERT INTO latest SELECT 'k', '{}' FROM t", "only SELECT")
	f("WITH t AS (SELECT 1) DELETE FROM latest", "only SELECT")
	f("SUMMARIZE SELECT * FROM 'x.csv'", "reads a file")
	f("DESCRIBE SELECT * FROM read_csv('x.csv')", "read_csv()")
	f("", "empty")
	f(" ;; -- nothing\n", "empty")
	f("SELECT 'unterminated", "quote is not closed")
	f("SELEC 1", "must be a SELECT")
}

// Queries that only read stay allowed, including words that look like denied ones.
func TestQueryAllowed(t *testing.T) {
	ts := newTestServer(t, Options{DB: testDB(t)})
	for _, q := range []string{
		"SELECT count(*) FROM readings",
		"select key, fields->>'v' from readings where key = 'insert; drop table x' limit 1",
		"FROM readings LIMIT 1",
		"WITH t AS (SELECT 1 AS a) SELECT * FROM t",
		"SELECT * FROM range(3)",
		"SELECT * FROM generate_series(1, 3)",
		"SELECT table_name FROM duckdb_tables()",
		"SELECT * FROM pragma_table_info('readings')",
		"SHOW TABLES",
		"DESCRIBE readings",
		"SUMMARIZE readings",
		"VALUES (1, 'a')",
		"SELECT 'read_csv(x)' AS s",
		"SELECT 1 AS \"update\"",
		"  -- leading comment\n  SELECT 1 ;  ",
		"SELECT $$a;b$$ AS s",
		"(SELECT 1) UNION ALL (SELECT 2)",
	} {
		code, _, body := post(t, ts.URL+"/api/v1/query", "text/plain", q)
		if code != 200 {
			t.Errorf("%q = %d %s", q, code, body)
		}
	}
}

func TestSetLimits(t *testing.T) {
	s, err := New(Options{DB: testDB(t), QueryMaxRows: 5})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	q := ts.URL + "/api/v1/query?q=" + url.QueryEscape("SELECT * FROM range(10)")
	if _, _, body := get(t, q); !strings.Contains(body, `"row_count": 5`) {
		t.Fatalf("before: %s", body)
	}
	s.SetLimits(Limits{Token: "new", QueryMaxRows: 7})
	if code, _, _ := get(t, q); code != 401 {
		t.Fatalf("a new token is not required: %d", code)
	}
	if _, _, body := get(t, q, "Authorization", "Bearer new"); !strings.Contains(body, `"row_count": 7`) {
		t.Fatalf("after: %s", body)
	}
}

func TestFlush(t *testing.T) {
	flushed := 0
	ts := newTestServer(t, Options{QueryTimeout: time.Second, Flush: func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("flush without a deadline")
		}
		flushed++
		return nil
	}})
	if code, _, body := post(t, ts.URL+"/api/v1/flush", "text/plain", ""); code != 200 || flushed != 1 || !strings.Contains(body, "flushed") {
		t.Fatalf("flush = %d %s (%d calls)", code, body, flushed)
	}
	if code, _, _ := get(t, ts.URL+"/api/v1/flush"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/v1/flush = %d", code)
	}
}

func TestDrain(t *testing.T) {
	s, err := New(Options{DB: testDB(t), QueryTimeout: 200 * time.Millisecond, MaxConcurrentQueries: 2})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	slow := ts.URL + "/api/v1/query?q=" + url.QueryEscape("SELECT count(*) FROM range(100000000000) a")
	done := make(chan int)
	go func() { code, _, _ := get(t, slow); done <- code }()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if err := s.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The query started 50ms before and runs into its 200ms limit.
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("Drain returned after %s, before the running query ended", el)
	}
	if code := <-done; code != 503 {
		t.Fatalf("the slow query = %d", code)
	}
	if code, _, body := get(t, ts.URL+"/api/v1/query?q=SELECT+1"); code != 503 || !strings.Contains(body, "retry later") {
		t.Fatalf("a query after Drain = %d %s", code, body)
	}
}

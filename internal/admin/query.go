package admin

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// QueryResult is the JSON answer of /api/v1/query.
type QueryResult struct {
	Columns        []string `json:"columns"`
	Types          []string `json:"types"`
	Rows           [][]any  `json:"rows"`
	RowCount       int      `json:"row_count"`
	Truncated      bool     `json:"truncated"` // more rows than max_rows; the rest were not read
	MaxRows        int      `json:"max_rows"`
	ElapsedSeconds float64  `json:"elapsed_seconds"`
}

func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	q, format, err := s.readQuery(w, r)
	if err != nil {
		code := http.StatusBadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			code = http.StatusRequestEntityTooLarge
		}
		writeError(w, code, err.Error())
		return
	}
	if format != "json" && format != "csv" {
		writeError(w, http.StatusBadRequest, "format "+strconv.Quote(format)+" is not json or csv")
		return
	}
	if s.opt.DB == nil {
		writeError(w, http.StatusServiceUnavailable, "storage is not open")
		return
	}
	lim := s.limits.Load()
	ctx, cancel := context.WithTimeout(r.Context(), lim.QueryTimeout)
	defer cancel()
	select {
	case s.queries <- struct{}{}:
		defer func() { <-s.queries }()
	case <-ctx.Done():
		s.m.queries.WithLabelValues("busy").Inc()
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"%d queries were running for all of query_timeout %s; retry later or raise admin.max_concurrent_queries",
			s.opt.MaxConcurrentQueries, lim.QueryTimeout))
		return
	}
	start := time.Now()
	res, err := s.run(ctx, q, lim.QueryMaxRows)
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		s.m.queries.WithLabelValues("refused").Inc()
		writeError(w, http.StatusBadRequest, refused.Error())
		return
	case err != nil && ctx.Err() == context.DeadlineExceeded:
		s.m.queries.WithLabelValues("timeout").Inc()
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"the query ran longer than query_timeout %s and was interrupted; narrow it (e.g. WHERE ts > now() - INTERVAL 1 HOUR) or raise admin.query_timeout", lim.QueryTimeout))
		return
	case err != nil:
		s.m.queries.WithLabelValues("error").Inc()
		writeError(w, http.StatusBadRequest, "query failed: "+err.Error())
		return
	}
	s.m.queries.WithLabelValues("ok").Inc()
	res.ElapsedSeconds = time.Since(start).Seconds()
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("X-Fpagent-Row-Count", strconv.Itoa(res.RowCount))
		w.Header().Set("X-Fpagent-Truncated", strconv.FormatBool(res.Truncated))
		w.WriteHeader(http.StatusOK)
		cw := csv.NewWriter(w)
		_ = cw.Write(res.Columns)
		rec := make([]string, len(res.Columns))
		for _, row := range res.Rows {
			for i, v := range row {
				rec[i] = csvValue(v)
			}
			_ = cw.Write(rec)
		}
		cw.Flush()
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// readQuery takes the SQL from ?q=, a JSON body {"q": …, "format": …}, a form
// body q=…, or a plain-text body.
func (s *Server) readQuery(w http.ResponseWriter, r *http.Request) (q, format string, err error) {
	format = r.URL.Query().Get("format")
	if r.Method == http.MethodGet {
		q = r.URL.Query().Get("q")
		if q == "" {
			return "", "", errors.New("give the SQL as ?q=…, or POST it as the body")
		}
		return q, orDefault(format, "json"), nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opt.MaxQuerySize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", "", fmt.Errorf("the query is larger than %d bytes: %w", s.opt.MaxQuerySize, err)
		}
		return "", "", fmt.Errorf("read the request body: %w", err)
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		var in struct {
			Q      string `json:"q"`
			Query  string `json:"query"`
			Format string `json:"format"`
		}
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return "", "", fmt.Errorf(`the body is not {"q": "SELECT …", "format": "json|csv"}: %v`, err)
		}
		q = orDefault(in.Q, in.Query)
		format = orDefault(format, in.Format)
	case "application/x-www-form-urlencoded":
		// A form q=…; but curl -d "SELECT …" sends plain SQL under this
		// type too, so a body without a q field is taken as the SQL itself.
		form, err := url.ParseQuery(string(body))
		if err == nil && form.Has("q") {
			q, format = form.Get("q"), orDefault(format, form.Get("format"))
			break
		}
		q = string(body)
	default:
		if !utf8.Valid(body) {
			return "", "", errors.New("the body is not UTF-8 text")
		}
		q = string(body)
	}
	if strings.TrimSpace(q) == "" {
		return "", "", errors.New("the query is empty; send one SELECT statement")
	}
	return q, orDefault(format, "json"), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// run checks q and runs it in a read-only transaction on a connection of its
// own, reading at most maxRows rows.
func (s *Server) run(ctx context.Context, q string, maxRows int) (res *QueryResult, err error) {
	if err := precheck(q); err != nil {
		return nil, err
	}
	conn, err := s.opt.DB.Conn(ctx)
	if err != nil {
		return nil, err
	}
	clean := false
	defer func() {
		if clean {
			conn.Close()
			return
		}
		// The connection may be left inside a transaction or an
		// interrupted query: discard it rather than hand it back to the pool.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
	}()
	if err := checkAST(ctx, conn, q); err != nil {
		clean = true
		return nil, err
	}
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION READ ONLY"); err != nil {
		return nil, err
	}
	res, err = readRows(ctx, conn, q, maxRows)
	if _, rbErr := conn.ExecContext(context.Background(), "ROLLBACK"); rbErr == nil && ctx.Err() == nil {
		clean = true
	}
	return res, err
}

func readRows(ctx context.Context, conn *sql.Conn, q string, maxRows int) (*QueryResult, error) {
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	res := &QueryResult{Columns: make([]string, len(cols)), Types: make([]string, len(cols)), Rows: [][]any{}, MaxRows: maxRows}
	for i, c := range cols {
		res.Columns[i] = c.Name()
		res.Types[i] = c.DatabaseTypeName()
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if len(res.Rows) == maxRows {
			res.Truncated = true
			break
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]any, len(cols))
		for i, v := range vals {
			row[i] = jsonValue(v, res.Types[i])
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	res.RowCount = len(res.Rows)
	return res, nil
}

// jsonValue turns what the driver returns into something encoding/json
// writes faithfully: times as RFC 3339, NaN and ±Inf as null, big integers
// and decimals as exact numbers, blobs as text with \xNN escapes (as DuckDB
// prints them), UUIDs in their usual form.
func jsonValue(v any, typ string) any {
	switch x := v.(type) {
	case nil, bool, string, int8, int16, int32, int64, uint8, uint16, uint32, uint64, int, uint:
		return x
	case float32:
		return jsonValue(float64(x), typ)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return x
	case *big.Int:
		return json.Number(x.String())
	case duckdb.Decimal:
		return json.Number(decimalString(x))
	case duckdb.Interval:
		return fmt.Sprintf("%d months %d days %s", x.Months, x.Days, time.Duration(x.Micros)*time.Microsecond)
	case time.Time:
		switch typ {
		case "DATE":
			return x.Format(time.DateOnly)
		case "TIME", "TIMETZ":
			return x.Format("15:04:05.999999999")
		}
		return x.UTC().Format(time.RFC3339Nano)
	case []byte:
		if typ == "UUID" && len(x) == 16 {
			h := hex.EncodeToString(x)
			return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
		}
		return blobString(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e, "")
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonValue(e, "")
		}
		return out
	case duckdb.OrderedMap:
		out := make(map[string]any, x.Len())
		keys, values := x.Keys(), x.Values()
		for i := range keys {
			out[fmt.Sprint(jsonValue(keys[i], ""))] = jsonValue(values[i], "")
		}
		return out
	case duckdb.Map:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(jsonValue(k, ""))] = jsonValue(e, "")
		}
		return out
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

func decimalString(d duckdb.Decimal) string {
	if d.Value == nil {
		return "0"
	}
	s := new(big.Int).Abs(d.Value).String()
	scale := int(d.Scale)
	if scale > 0 {
		if len(s) <= scale {
			s = strings.Repeat("0", scale-len(s)+1) + s
		}
		s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	}
	if d.Value.Sign() < 0 {
		s = "-" + s
	}
	return s
}

func blobString(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f && c != '\\' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, `\x%02X`, c)
		}
	}
	return sb.String()
}

// csvValue writes a converted value as one CSV cell; nested values as JSON.
func csvValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.Number:
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case []any, map[string]any:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return fmt.Sprint(v)
}

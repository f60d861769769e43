package admin

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// RefusedError says why a query was not run. It is the user's to fix: the
// API answers it with 400.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "query refused: " + e.Reason }

func refuse(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// The guard has two layers, and a query must pass both:
//
//  1. A lexer that knows SQL's strings, quoted names, dollar quotes and
//     comments finds the statements and their first keyword, so that
//     "INSERT …", "SELECT 1; DROP …" and "/* x */ CoPy …" are refused with a
//     reason a person understands, and refuses calls of the file-reading
//     functions by name wherever they appear.
//  2. DuckDB parses the query itself (json_serialize_sql serializes SELECT
//     statements only) and the AST is walked: every table function must be
//     on an allow list, and no table reference may be a file path (FROM
//     'x.csv' is a table reference DuckDB resolves to a file).
//
// The query then runs in a READ ONLY transaction, so a write that slipped
// through both would still fail in DuckDB.

// allowedFirst are the keywords a read-only statement may start with.
var allowedFirst = map[string]bool{
	"SELECT": true, "WITH": true, "FROM": true, "VALUES": true, "TABLE": true,
	"SHOW": true, "DESCRIBE": true, "SUMMARIZE": true, "PIVOT": true, "UNPIVOT": true,
}

// deniedFirst names statements that are refused, with why.
var deniedFirst = map[string]string{
	"INSERT": "writes", "UPDATE": "writes", "DELETE": "writes", "MERGE": "writes", "TRUNCATE": "writes",
	"UPSERT": "writes", "REPLACE": "writes",
	"CREATE": "changes the schema", "DROP": "changes the schema", "ALTER": "changes the schema",
	"COMMENT": "changes the schema",
	"ATTACH":  "opens other databases", "DETACH": "changes attached databases", "USE": "changes the session",
	"COPY": "reads or writes files", "EXPORT": "writes files", "IMPORT": "reads files",
	"INSTALL": "installs extensions", "LOAD": "loads extensions", "FORCE": "installs extensions",
	"SET": "changes settings", "RESET": "changes settings", "PRAGMA": "runs pragmas", "CALL": "calls procedures",
	"CHECKPOINT": "writes the database", "VACUUM": "writes the database", "ANALYZE": "writes statistics",
	"BEGIN": "controls transactions", "START": "controls transactions", "COMMIT": "controls transactions",
	"END": "controls transactions", "ROLLBACK": "controls transactions", "ABORT": "controls transactions",
	"PREPARE": "prepares statements", "EXECUTE": "executes statements", "DEALLOCATE": "prepares statements",
	"EXPLAIN": "is not supported here", "UPDATE_EXTENSIONS": "installs extensions", "SECRET": "manages secrets",
}

// fileFunctions read files, run SQL from strings or reach outside the
// database; they are refused by name even before DuckDB parses the query.
var fileFunctions = map[string]bool{
	"read_csv": true, "read_csv_auto": true, "read_parquet": true, "parquet_scan": true,
	"read_json": true, "read_json_auto": true, "read_json_objects": true, "read_json_objects_auto": true,
	"read_ndjson": true, "read_ndjson_auto": true, "read_ndjson_objects": true, "read_text": true,
	"read_blob": true, "read_duckdb": true, "glob": true, "sniff_csv": true, "parquet_metadata": true,
	"parquet_schema": true, "parquet_file_metadata": true, "parquet_kv_metadata": true,
	"parquet_full_metadata": true, "parquet_bloom_probe": true, "query": true, "query_table": true,
	"json_execute_serialized_sql": true, "arrow_scan": true, "arrow_scan_dumb": true,
	"checkpoint": true, "force_checkpoint": true, "enable_logging": true, "disable_logging": true,
	"enable_profiling": true, "disable_profiling": true, "truncate_duckdb_logs": true, "delta_scan": true,
	"iceberg_scan": true, "sqlite_scan": true, "postgres_scan": true, "mysql_scan": true,
}

// allowedTableFunctions are the table functions a query may use: generators
// and the catalog's own views. Everything else (files, SQL in strings,
// logging, checkpoints) is refused.
var allowedTableFunctions = map[string]bool{
	"range": true, "generate_series": true, "unnest": true, "json_each": true, "json_tree": true,
	"repeat": true, "repeat_row": true,
	"duckdb_columns": true, "duckdb_constraints": true, "duckdb_databases": true, "duckdb_functions": true,
	"duckdb_indexes": true, "duckdb_keywords": true, "duckdb_memory": true, "duckdb_schemas": true,
	"duckdb_settings": true, "duckdb_tables": true, "duckdb_types": true, "duckdb_views": true,
	"duckdb_sequences":     true,
	"pragma_database_size": true, "pragma_storage_info": true, "pragma_table_info": true,
	"pragma_version": true, "pragma_platform": true,
}

// deniedScalarFunctions change state.
var deniedScalarFunctions = map[string]bool{"nextval": true, "setseed": true}

type tokKind uint8

const (
	tokWord  tokKind = iota // keyword or unquoted name
	tokQName                // "quoted name"
	tokString
	tokSemicolon
	tokPunct
)

type token struct {
	kind tokKind
	text string
}

// lexSQL splits q into tokens, dropping whitespace and comments.
func lexSQL(q string) ([]token, error) {
	var toks []token
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && strings.HasPrefix(q[i:], "--"):
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				i = len(q)
			} else {
				i += end + 1
			}
		case c == '/' && strings.HasPrefix(q[i:], "/*"):
			depth, j := 0, i
			for j < len(q) {
				if strings.HasPrefix(q[j:], "/*") {
					depth++
					j += 2
				} else if strings.HasPrefix(q[j:], "*/") {
					depth--
					j += 2
					if depth == 0 {
						break
					}
				} else {
					j++
				}
			}
			if depth != 0 {
				return nil, refuse("a /* comment is not closed")
			}
			i = j
		case c == '\'' || c == '"':
			j := i + 1
			for {
				k := strings.IndexByte(q[j:], c)
				if k < 0 {
					return nil, refuse("a %c quote is not closed", c)
				}
				j += k + 1
				if j < len(q) && q[j] == c { // doubled quote: an escaped one
					j++
					continue
				}
				break
			}
			kind := tokString
			text := q[i+1 : j-1]
			if c == '"' {
				kind = tokQName
				text = strings.ReplaceAll(text, `""`, `"`)
			}
			toks = append(toks, token{kind, text})
			i = j
		case c == '$' && dollarTag(q[i:]) != "":
			tag := dollarTag(q[i:])
			end := strings.Index(q[i+len(tag):], tag)
			if end < 0 {
				return nil, refuse("a %s quote is not closed", tag)
			}
			toks = append(toks, token{tokString, q[i+len(tag) : i+len(tag)+end]})
			i += len(tag) + end + len(tag)
		case c == ';':
			toks = append(toks, token{tokSemicolon, ";"})
			i++
		case isWordByte(q, i):
			j := i
			for j < len(q) && (isWordByte(q, j) || q[j] == '$' || q[j] >= '0' && q[j] <= '9') {
				_, size := utf8.DecodeRuneInString(q[j:])
				j += size
			}
			toks = append(toks, token{tokWord, q[i:j]})
			i = j
		default:
			_, size := utf8.DecodeRuneInString(q[i:])
			toks = append(toks, token{tokPunct, q[i : i+size]})
			i += size
		}
	}
	return toks, nil
}

// dollarTag returns the opening $tag$ (or $$) at the start of s, or "".
func dollarTag(s string) string {
	for j := 1; j < len(s); j++ {
		c := s[j]
		if c == '$' {
			return s[:j+1]
		}
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || j > 1 && c >= '0' && c <= '9') {
			return ""
		}
	}
	return ""
}

func isWordByte(q string, i int) bool {
	c := q[i]
	if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	if c < utf8.RuneSelf {
		return false
	}
	r, _ := utf8.DecodeRuneInString(q[i:])
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}

// precheck is the textual layer; it returns the statement without trailing semicolons.
func precheck(q string) error {
	toks, err := lexSQL(q)
	if err != nil {
		return err
	}
	var stmts [][]token
	cur := []token{}
	for _, t := range toks {
		if t.kind == tokSemicolon {
			if len(cur) > 0 {
				stmts = append(stmts, cur)
			}
			cur = []token{}
			continue
		}
		cur = append(cur, t)
	}
	if len(cur) > 0 {
		stmts = append(stmts, cur)
	}
	switch {
	case len(stmts) == 0:
		return refuse("the query is empty; send one SELECT statement")
	case len(stmts) > 1:
		return refuse("%d statements in one request; send one statement at a time", len(stmts))
	}
	st := stmts[0]
	first := ""
	for _, t := range st {
		if t.kind == tokPunct && t.text == "(" {
			continue
		}
		first = strings.ToUpper(t.text)
		if t.kind != tokWord {
			first = t.text
		}
		break
	}
	if why, ok := deniedFirst[first]; ok {
		return refuse("%s statements are not allowed: %s, and the query API is read-only", first, why)
	}
	if !allowedFirst[first] {
		return refuse("a query must be a SELECT (or WITH, FROM, VALUES, SHOW, DESCRIBE, SUMMARIZE); it starts with %q", first)
	}
	for i, t := range st {
		if t.kind != tokWord && t.kind != tokQName {
			continue
		}
		name := strings.ToLower(t.text)
		if fileFunctions[name] && i+1 < len(st) && st[i+1].kind == tokPunct && st[i+1].text == "(" {
			return refuse("%s() reads files or runs SQL outside the query API's read-only view; query the tables (readings, latest, dead_letters) instead", name)
		}
	}
	return nil
}

// checkAST asks DuckDB to parse q and walks the result.
func checkAST(ctx context.Context, conn *sql.Conn, q string) error {
	var out string
	if err := conn.QueryRowContext(ctx, "SELECT json_serialize_sql(?::VARCHAR)::VARCHAR", q).Scan(&out); err != nil {
		return fmt.Errorf("parse the query with DuckDB: %w", err)
	}
	var res struct {
		Error      bool              `json:"error"`
		ErrorType  string            `json:"error_type"`
		Message    string            `json:"error_message"`
		Statements []json.RawMessage `json:"statements"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return fmt.Errorf("read DuckDB's parse of the query: %w", err)
	}
	if res.Error {
		if strings.Contains(res.Message, "Only SELECT") {
			return refuse("only SELECT statements can run here (DuckDB: %s)", res.Message)
		}
		return refuse("%s", res.Message)
	}
	switch len(res.Statements) {
	case 0:
		return refuse("the query is empty; send one SELECT statement")
	case 1:
	default:
		return refuse("%d statements in one request; send one statement at a time", len(res.Statements))
	}
	var tree any
	dec := json.NewDecoder(strings.NewReader(string(res.Statements[0])))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return fmt.Errorf("read DuckDB's parse of the query: %w", err)
	}
	return walkAST(tree, 0)
}

func walkAST(n any, depth int) error {
	if depth > 1000 {
		return refuse("the query nests deeper than 1000 levels")
	}
	switch v := n.(type) {
	case []any:
		for _, e := range v {
			if err := walkAST(e, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		typ, _ := v["type"].(string)
		class, _ := v["class"].(string)
		switch {
		case typ == "TABLE_FUNCTION":
			fn, _ := v["function"].(map[string]any)
			name, _ := fn["function_name"].(string)
			name = strings.ToLower(name)
			if !allowedTableFunctions[name] {
				if fileFunctions[name] {
					return refuse("%s() reads files or runs SQL outside the query API's read-only view; query the tables (readings, latest, dead_letters) instead", name)
				}
				return refuse("table function %s() is not allowed here; allowed: generators (range, generate_series, unnest) and catalog views (duckdb_tables, duckdb_columns, …)", name)
			}
		case typ == "BASE_TABLE":
			name, _ := v["table_name"].(string)
			if strings.ContainsAny(name, "./\\:*?~") {
				return refuse("FROM %q reads a file; only the database's tables can be queried (readings, latest, dead_letters, …)", name)
			}
		case class == "FUNCTION":
			name, _ := v["function_name"].(string)
			if deniedScalarFunctions[strings.ToLower(name)] {
				return refuse("%s() changes state; the query API is read-only", strings.ToLower(name))
			}
		}
		for _, e := range v {
			if err := walkAST(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

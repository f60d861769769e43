package admin

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// The AST layer refuses on its own what the textual layer refuses, so that
// neither is the only guard.
func TestCheckASTAlone(t *testing.T) {
	db := testDB(t)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f := func(q, want string) {
		t.Helper()
		err := checkAST(context.Background(), conn, q)
		var re *RefusedError
		if want == "" {
			if err != nil {
				t.Errorf("%q refused: %v", q, err)
			}
			return
		}
		if !errors.As(err, &re) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want a refusal with %q", q, err, want)
		}
	}
	f("SELECT * FROM read_csv('x.csv')", "read_csv()")
	f("SELECT * FROM main.read_parquet('x.parquet')", "read_parquet()")
	f("SELECT * FROM glob('*')", "glob()")
	f("SELECT * FROM 'x.csv'", "reads a file")
	f("INSERT INTO latest VALUES ('k', '{}')", "only SELECT")
	f("SELECT 1; SELECT 2", "2 statements")
	f("SELECT 1; DROP TABLE latest", "only SELECT")
	f("SELECT * FROM duckdb_secrets()", "not allowed")
	f("SELECT setseed(0.5)", "changes state")
	f("SELECT * FROM readings", "")
	f("SELECT * FROM range(3)", "")
}

func FuzzPrecheck(f *testing.F) {
	for _, s := range []string{"SELECT 1", "/* a /* b */ */ DROP x", "SELECT $t$;$t$; x", `SELECT "a""b", 'c''d'`, "-- x\nSELECT 1;", "SELECT 'é' AS ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		err := precheck(q)
		var re *RefusedError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("precheck(%q) = %v, not a RefusedError", q, err)
		}
	})
}

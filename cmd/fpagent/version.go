package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/fpagent/fpagent/internal/version"
)

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "fpagent version [-json]",
		"Print the version, commit, build date, Go version and the DuckDB version linked in.", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	v := version.Get()
	duck := duckdbVersion()
	if *asJSON {
		out, _ := json.MarshalIndent(struct {
			version.Info
			DuckDB string `json:"duckdb_version"`
		}{v, duck}, "", "  ")
		fmt.Fprintf(stdout, "%s\n", out)
		return exitOK
	}
	fmt.Fprintf(stdout, "fpagent %s\n  commit:     %s\n  built:      %s\n  go:         %s\n  duckdb:     %s\n",
		v.Version, v.Commit, v.Date, v.GoVersion, duck)
	return exitOK
}

// duckdbVersion asks an in-memory DuckDB for its version.
func duckdbVersion() string {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer db.Close()
	var v string
	if err := db.QueryRow("SELECT version()").Scan(&v); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return v
}

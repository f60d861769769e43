package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/fpagent/fpagent/storage"
)

func cmdExport(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("export", "fpagent export [-day YYYY-MM-DD | -from YYYY-MM-DD -to YYYY-MM-DD] [-addr HOST:PORT]",
		"Ask the running agent to write the readings of whole UTC days to Parquet\n"+
			"(POST /api/v1/export): <export.dir>/day=YYYY-MM-DD/readings.parquet, one file per\n"+
			"day, replacing an earlier export of that day. The WAL is flushed into DuckDB first.\n"+
			"Without -day or -from/-to: yesterday. Read the files back with DuckDB:\n"+
			"  SELECT * FROM read_parquet('export/*/*.parquet', hive_partitioning = true)", stderr)
	day := fs.String("day", "", "one UTC day")
	from := fs.String("from", "", "first UTC day of a range")
	to := fs.String("to", "", "last UTC day of a range (inclusive)")
	target := adminFlags(fs)
	timeout := fs.Duration("timeout", time.Hour, "give up after this long")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 || (*day != "" && (*from != "" || *to != "")) || (*from == "") != (*to == "") {
		fmt.Fprintln(stderr, "fpagent export: give -day, or -from and -to, or nothing (yesterday); see fpagent export -h")
		return exitUsage
	}
	if err := target.resolve(); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	q := url.Values{}
	if *day != "" {
		q.Set("day", *day)
	}
	if *from != "" {
		q.Set("from", *from)
		q.Set("to", *to)
	}
	data, _, err := call(&http.Client{Timeout: *timeout}, baseURL(*target.addr)+"/api/v1/export?"+q.Encode(), *target.token, nil)
	if err != nil {
		fmt.Fprintf(stderr, "fpagent export: %v\n", err)
		return exitFailure
	}
	var res []storage.ExportResult
	if err := json.Unmarshal(data, &res); err != nil {
		fmt.Fprintf(stderr, "fpagent export: unexpected answer %q: %v\n", data, err)
		return exitFailure
	}
	for _, r := range res {
		fmt.Fprintf(stdout, "%s  %d rows  %d bytes  %s\n", r.Day, r.Rows, r.Bytes, r.File)
	}
	return exitOK
}

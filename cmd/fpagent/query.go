package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fpagent/fpagent/internal/config"
)

func cmdQuery(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("query", `fpagent query [-addr HOST:PORT] [-format table|csv|json] "SQL"`,
		"Run one read-only SQL statement against the running agent's admin API\n"+
			"(POST /api/v1/query) and print the rows: a readable table by default.\n"+
			"Tables: readings (ts, key, measurement, tags, fields), latest (key, ts, record),\n"+
			"dead_letters. Example: fpagent query \"SELECT count(*) FROM readings\"", stderr)
	target := adminFlags(fs)
	format := fs.String("format", "table", "output: table, csv or json")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	flush := fs.Bool("flush", false, "first flush what the WAL holds into DuckDB (POST /api/v1/flush), so the query sees the latest writes")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, `fpagent query: give the SQL as one argument, e.g. fpagent query "SELECT count(*) FROM readings"`)
		return exitUsage
	}
	if *format != "table" && *format != "csv" && *format != "json" {
		fmt.Fprintf(stderr, "fpagent query: -format %q is not table, csv or json\n", *format)
		return exitUsage
	}
	if err := target.resolve(); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	wire := "json"
	if *format == "csv" {
		wire = "csv"
	}
	client := &http.Client{Timeout: *timeout}
	if *flush {
		if _, _, err := call(client, baseURL(*target.addr)+"/api/v1/flush", *target.token, nil); err != nil {
			fmt.Fprintf(stderr, "fpagent query: flush: %v\n", err)
			return exitFailure
		}
	}
	body, _ := json.Marshal(map[string]string{"q": fs.Arg(0), "format": wire})
	data, hdr, err := call(client, baseURL(*target.addr)+"/api/v1/query", *target.token, body)
	if err != nil {
		fmt.Fprintf(stderr, "fpagent query: %v\n", err)
		return exitFailure
	}
	switch *format {
	case "csv", "json":
		_, _ = stdout.Write(data)
		if hdr.Get("X-Fpagent-Truncated") == "true" {
			fmt.Fprintln(stderr, "fpagent query: the answer was cut at admin.query_max_rows rows")
		}
		return exitOK
	}
	var res struct {
		Columns   []string `json:"columns"`
		Rows      [][]any  `json:"rows"`
		Truncated bool     `json:"truncated"`
		MaxRows   int      `json:"max_rows"`
		Elapsed   float64  `json:"elapsed_seconds"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&res); err != nil {
		fmt.Fprintf(stderr, "fpagent query: the answer is not the expected JSON: %v\n", err)
		return exitFailure
	}
	writeTable(stdout, res.Columns, res.Rows)
	note := fmt.Sprintf("(%d row%s, %.3fs)", len(res.Rows), plural(len(res.Rows)), res.Elapsed)
	if res.Truncated {
		note = fmt.Sprintf("(first %d rows: cut at admin.query_max_rows %d, %.3fs)", len(res.Rows), res.MaxRows, res.Elapsed)
	}
	fmt.Fprintln(stdout, note)
	return exitOK
}

// adminTarget is how a command reaches the running agent's admin API.
type adminTarget struct{ addr, cfgPath, token *string }

// adminFlags adds -addr, -config and -token to fs.
func adminFlags(fs *flag.FlagSet) adminTarget {
	return adminTarget{
		addr:    fs.String("addr", "", "admin API address (default: admin.listen of -config, else 127.0.0.1:8187)"),
		cfgPath: fs.String("config", "", "read admin.listen and admin.token from this config file"),
		token:   fs.String("token", "", "admin bearer token (default: $FPAGENT_ADMIN_TOKEN, else admin.token of -config)"),
	}
}

// resolve fills in the address and token the flags left empty: from the
// config file, $FPAGENT_ADMIN_TOKEN, or the defaults.
func (t adminTarget) resolve() error {
	cfg := config.Default()
	if *t.cfgPath != "" {
		c, err := config.Load(*t.cfgPath)
		if err != nil {
			return err
		}
		cfg = c
	}
	if *t.addr == "" {
		*t.addr = cfg.Admin.Listen
	}
	if *t.token == "" {
		*t.token = os.Getenv("FPAGENT_ADMIN_TOKEN")
	}
	if *t.token == "" {
		*t.token = cfg.Admin.Token
	}
	return nil
}

// call POSTs body (JSON) to u and returns the answer of a 200, or an error
// that carries the API's own message.
func call(client *http.Client, u, token string, body []byte) ([]byte, http.Header, error) {
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the agent at %s: %w\n(is it running? is -addr right?)", u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return nil, nil, fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	return data, resp.Header, nil
}

// baseURL turns a listen address into a URL to reach it: a wildcard host
// becomes loopback.
func baseURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}).String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// maxCellWidth keeps one long JSON value from making the table unreadable.
const maxCellWidth = 60

// writeTable prints rows as aligned columns under a header.
func writeTable(w io.Writer, cols []string, rows [][]any) {
	cells := make([][]string, len(rows))
	width := make([]int, len(cols))
	for i, c := range cols {
		width[i] = utf8.RuneCountInString(c)
	}
	for r, row := range rows {
		cells[r] = make([]string, len(cols))
		for i := range cols {
			var v any
			if i < len(row) {
				v = row[i]
			}
			s := cellString(v)
			if utf8.RuneCountInString(s) > maxCellWidth {
				s = string([]rune(s)[:maxCellWidth-1]) + "…"
			}
			cells[r][i] = s
			width[i] = max(width[i], utf8.RuneCountInString(s))
		}
	}
	line := func(vals []string) {
		var b strings.Builder
		for i, v := range vals {
			if i > 0 {
				b.WriteString(" | ")
			}
			b.WriteString(v)
			if i < len(vals)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(v)))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(cols)
	sep := make([]string, len(cols))
	for i := range cols {
		sep[i] = strings.Repeat("-", width[i])
	}
	fmt.Fprintln(w, strings.Join(sep, "-+-"))
	for _, row := range cells {
		line(row)
	}
}

func cellString(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(x)
	case json.Number:
		return x.String()
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

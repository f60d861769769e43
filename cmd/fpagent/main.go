// Command fpagent is the metrics and sensor ingestion agent: it takes InfluxDB
// line protocol over HTTP, TCP and UDP (and MQTT), makes every reading durable
// in a write-ahead log, and batches it into DuckDB. Run `fpagent -h`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure: a port in use, storage failing, damage found by wal verify
	exitUsage   = 2 // a bad command line or a bad config file
	exitDataDir = 3 // the data directory is unusable: in use by another agent, not writable, or its disk is full
)

const usage = `fpagent - ingest line protocol (HTTP, TCP, UDP, MQTT) into a WAL and DuckDB

Usage:
  fpagent [-config FILE]              run the agent (no -config: safe defaults, data in ./fpagent-data)
  fpagent check [-config FILE]        validate a config file and print the effective configuration
  fpagent query [flags] "SQL"         run a read-only SQL query against the running agent
  fpagent export [flags]              write history to Parquet, one file per UTC day (via the running agent)
  fpagent wal verify DIR              read a WAL directory offline and report records and damage
  fpagent demo [-dir DIR]             the fast_persist demo: write, flush, reopen, verify
  fpagent version                     print the version, commit, build date, Go and DuckDB versions

Run "fpagent COMMAND -h" for the flags of a command.
Exit status: 0 ok, 1 failure, 2 bad usage or config, 3 data directory unusable.
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

// dispatch runs the subcommand named by args[0], or the agent.
func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return cmdCheck(args[1:], stdout, stderr)
		case "query":
			return cmdQuery(args[1:], stdout, stderr)
		case "wal":
			return cmdWAL(args[1:], stdout, stderr)
		case "export":
			return cmdExport(args[1:], stdout, stderr)
		case "demo":
			return cmdDemo(args[1:], stdout, stderr)
		case "version":
			return cmdVersion(args[1:], stdout, stderr)
		case "run":
			args = args[1:]
		case "help":
			fmt.Fprint(stdout, usage)
			return exitOK
		}
	}
	return cmdRun(args, stdout, stderr)
}

// newFlags returns a flag set whose -h prints what the command does.
func newFlags(name, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\n%s\n", synopsis, about)
		var n int
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(stderr, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args; -h is exit 0, a bad flag exit 2.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

package main

import (
	"fmt"
	"io"

	"github.com/fpagent/fpagent/internal/config"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "fpagent check [-config FILE | FILE]",
		"Validate a config file and print the effective configuration (every key, defaults\n"+
			"filled in, ${VAR} expanded) as YAML. Exit 0 when it is valid, 2 with every problem\n"+
			"(key and line) when it is not. Without a file, prints the defaults.", stderr)
	path := fs.String("config", "", "config file to check")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case fs.NArg() == 1 && *path == "":
		*path = fs.Arg(0)
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "fpagent check: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	out, err := cfg.Marshal()
	if err != nil {
		fmt.Fprintln(stderr, "fpagent check:", err)
		return exitFailure
	}
	src := *path
	if src == "" {
		src = "defaults, no file"
	}
	fmt.Fprintf(stdout, "# effective configuration (%s): valid\n# WAL in %s, DuckDB in %s\n%s", src, cfg.WALDir(), cfg.DBPath(), out)
	return exitOK
}

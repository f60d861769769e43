package config

import (
	"fmt"
	"os"
	"strings"
)

// expandEnv replaces ${VAR} and ${VAR:-default} with the environment's
// values and $$ with a literal $, line by line so that errors name the line
// and YAML line numbers stay right. Whole-line comments are left alone, so a
// commented-out example may mention variables that are not set. ${VAR} of an
// unset variable is an error (a silently empty password or address is worse);
// ${VAR:-default} takes the default when VAR is unset or empty, as in sh.
func expandEnv(src string, lookup func(string) (string, bool)) (string, []Problem) {
	var probs []Problem
	lines := strings.SplitAfter(src, "\n")
	var b strings.Builder
	b.Grow(len(src))
	for i, line := range lines {
		if t := strings.TrimLeft(line, " \t"); strings.HasPrefix(t, "#") || !strings.Contains(line, "$") {
			b.WriteString(line)
			continue
		}
		out, err := expandLine(line, lookup)
		if err != nil {
			probs = append(probs, Problem{Line: i + 1, Msg: err.Error()})
			b.WriteString(line)
			continue
		}
		b.WriteString(out)
	}
	return b.String(), probs
}

func expandLine(line string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		c := line[i]
		if c != '$' || i+1 == len(line) {
			b.WriteByte(c)
			continue
		}
		switch line[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(line[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("%q has no closing }; write $${ for a literal ${", strings.TrimSpace(line[i:]))
		}
		expr := line[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("${%s}: %q is not an environment variable name (letters, digits and _, not starting with a digit)", expr, name)
		}
		val, ok := lookup(name)
		switch {
		case hasDef && val == "":
			val = def
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set; set it, or write ${%s:-default} to give a default", name, name)
		}
		if strings.ContainsAny(val, "\n\r") {
			return "", fmt.Errorf("environment variable %s holds a line break, which would change the YAML around it", name)
		}
		b.WriteString(val)
		i += 2 + end
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func osLookup(name string) (string, bool) { return os.LookupEnv(name) }

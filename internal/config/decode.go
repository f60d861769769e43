package config

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// scalarDecoder is implemented by the value types that read themselves from
// one YAML scalar (Duration, Size, Seconds).
type scalarDecoder interface {
	decodeScalar(n *yaml.Node) error
}

// defaulter is implemented by list elements that have defaults of their own,
// so that a subscription written with only a topic still gets qos and format.
type defaulter interface {
	setDefaults()
}

// decoder walks a yaml.Node tree into a struct, strictly: every key must be a
// field, every value must have the field's type. Problems are collected with
// the dotted key and the line, and the walk goes on so that one run reports
// them all.
type decoder struct {
	lines    map[string]int // dotted key -> line of its value, for keys the file sets
	problems []Problem
	visited  int // nodes walked, bounded so that nested aliases cannot blow up
}

// maxNodes bounds the walk: a real config has a few hundred nodes, while
// aliases of aliases can make a small file expand exponentially.
const maxNodes = 100000

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.problems = append(d.problems, Problem{Line: line, Key: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if d.visited++; d.visited > maxNodes {
		if d.visited == maxNodes+1 {
			d.fail(n, path, "the document expands to more than %d values (aliases of aliases?)", maxNodes)
		}
		return
	}
	if path != "" {
		d.lines[path] = n.Line
	}
	if v.CanAddr() {
		if sd, ok := v.Addr().Interface().(scalarDecoder); ok {
			if n.Kind != yaml.ScalarNode {
				d.fail(n, path, "want a single value, got %s", describe(n))
				return
			}
			if err := sd.decodeScalar(n); err != nil {
				d.fail(n, path, "%v", err)
			}
			return
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		p := reflect.New(v.Type().Elem())
		d.decode(n, p.Elem(), path)
		v.Set(p)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if isNull(n) {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			e := s.Index(i)
			if df, ok := e.Addr().Interface().(defaulter); ok {
				df.setDefaults()
			}
			d.decode(item, e, fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "want a string, got %s", describe(n))
			return
		}
		if isNull(n) {
			v.SetString("")
			return
		}
		if i := strings.IndexFunc(n.Value, unicode.IsControl); i >= 0 {
			d.fail(n, path, "the value holds a control character (%q at byte %d); write it on one line", n.Value[i], i)
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.fail(n, path, "want true or false, got %s", describe(n))
			return
		}
		b, _ := strconv.ParseBool(n.Value)
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.fail(n, path, "want a whole number, got %s", describe(n))
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			d.fail(n, path, "%s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if t := n.ShortTag(); n.Kind != yaml.ScalarNode || t != "!!int" && t != "!!float" {
			d.fail(n, path, "want a number, got %s", describe(n))
			return
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(n, path, "%q is not a finite number", n.Value)
			return
		}
		v.SetFloat(f)
	default:
		// Only reachable if a field of an unsupported type is added to Config.
		d.fail(n, path, "cannot read a value of Go type %s", v.Type())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of keys, got %s", describe(n))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := k.Value
		kp := join(path, name)
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "a key must be a plain name, got %s", describe(k))
			continue
		}
		if line, dup := seen[name]; dup {
			d.fail(k, kp, "set twice (first on line %d)", line)
			continue
		}
		seen[name] = k.Line
		idx, ok := fields[name]
		if !ok {
			d.fail(k, kp, "unknown key %q%s", name, suggest(name, fields, path))
			continue
		}
		d.decode(val, v.FieldByIndex(idx), kp)
	}
}

// structFields maps yaml key names to field index paths; the fields of a
// struct tagged ",inline" count as the enclosing struct's own.
func structFields(t reflect.Type) map[string][]int {
	m := make(map[string][]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if opts == "inline" && f.Type.Kind() == reflect.Struct {
			for k, idx := range structFields(f.Type) {
				m[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = []int{i}
	}
	return m
}

// suggest names the closest known key, or lists the known keys.
func suggest(name string, fields map[string][]int, path string) string {
	// A suggestion must be close for the name's length: "flush_intervall"
	// suggests flush_interval, "foo" suggests nothing.
	best, bestDist := "", max(1, len(name)/4)+1
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
		if dist := editDistance(name, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	sort.Strings(known)
	where := "here"
	if path != "" {
		where = "in " + path
	}
	return fmt.Sprintf("; known keys %s: %s", where, strings.Join(known, ", "))
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

package config

import (
	"os"
	"reflect"
	"testing"
)

// FuzzParse: no input panics, and an accepted config survives printing and
// reading back unchanged (what `fpagent check` prints is a valid config).
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("../../agent.yaml.example"); err == nil {
		f.Add(string(data))
	}
	for _, s := range []string{
		"data_dir: x\n", "storage: {max_wal_size: 1GiB, flush_interval_seconds: 2.5}\n",
		"a: &a [x]\nb: *a\n", "data_dir: ${X:-y}$$\n", "inputs:\n  mqtt:\n    subscriptions: [{topic: a/+}]\n",
		"log: {level: debug, format: json}\nadmin: {listen: '[::1]:0'}\n",
	} {
		f.Add(s)
	}
	lookup := func(k string) (string, bool) { return "v", k == "X" }
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := parse([]byte(src), "fuzz", lookup)
		if err != nil {
			return
		}
		out, err := cfg.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := parse(out, "effective", lookup)
		if err != nil {
			t.Fatalf("effective config does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(cfg, back) {
			t.Fatalf("round trip changed the config:\n%s", out)
		}
	})
}

package e2e

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSeriesLimit drives storage.max_series from outside: points that would
// start a series past the limit are refused with a reason (HTTP 400), kept as
// dead letters, counted in /stats and /metrics, and the limit holds across a
// restart, when the known series come back from DuckDB.
func TestSeriesLimit(t *testing.T) {
	dir := t.TempDir()
	ports := newPorts(t)
	cfg := baseConfig(dir, ports, "max_series: 3", "")
	a := startAgent(t, dir, ports, cfg)

	post := func(body string) (int, string) {
		t.Helper()
		resp, err := http.Post(a.HTTP+"/api/v2/write?org=o&bucket=b", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(msg)
	}
	// Three series fit; two more in the same body do not.
	status, msg := post("m,s=a v=1 1\nm,s=b v=1 2\nm,s=c v=1 3\nm,s=d v=1 4\nm,s=e v=1 5\nm,s=a v=2 6\n")
	if status != http.StatusBadRequest || !strings.Contains(msg, "series limit reached: 3 series") ||
		!strings.Contains(msg, "storage.max_series") || !strings.Contains(msg, "1 more bad lines") || !strings.Contains(msg, "4 points stored") {
		t.Errorf("over the limit: %d %s; want 400 naming the limit, 1 more and 4 stored", status, msg)
	}
	if status, msg := post("m,s=c v=3 7\n"); status != http.StatusNoContent {
		t.Errorf("a known series: %d %s, want 204", status, msg)
	}
	// Over TCP the connection stays up and the points around it are kept
	// (HTTP writes carry their bucket as the db tag: these are its series).
	c, err := net.Dial("tcp", a.TCP)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("m,db=b,s=b v=3 8\nm,db=b,s=f v=1 9\nm,db=b,s=a v=3 10\n")); err != nil {
		t.Fatal(err)
	}
	c.Close()

	type inputStats struct {
		Received  uint64 `json:"received_points"`
		Persisted uint64 `json:"persisted_points"`
		Rejected  uint64 `json:"rejected_points"`
	}
	var st struct { // the storage figures are the top level of /stats
		Limit   int64                 `json:"series_limit"`
		Refused uint64                `json:"series_limit_refused_points_total"`
		Inputs  map[string]inputStats `json:"inputs"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		a.getJSON("/stats", &st)
		if tcp := st.Inputs["tcp"]; tcp.Persisted+tcp.Rejected == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the TCP points were not settled after 30s: %+v", st.Inputs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := map[string]inputStats{"http": {7, 5, 2}, "tcp": {3, 2, 1}}
	for in, w := range want {
		if got := st.Inputs[in]; got != w {
			t.Errorf("%s counters %+v, want %+v", in, got, w)
		}
	}
	if st.Limit != 3 || st.Refused != 3 {
		t.Errorf("storage stats: limit %d, refused %d; want 3 and 3", st.Limit, st.Refused)
	}
	m := a.get("/metrics")
	for _, line := range []string{"fpagent_storage_series_limit 3", "fpagent_storage_series_limit_refused_points_total 3"} {
		if !strings.Contains(m, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	a.stop()

	// The limit holds after a restart: the three series are read back.
	a.start()
	if status, msg := post("m,s=g v=1 11\nm,s=b v=4 12\n"); status != http.StatusBadRequest || !strings.Contains(msg, `m,db=b,s=g`) {
		t.Errorf("a fourth series after a restart: %d %s, want 400 naming m,db=b,s=g", status, msg)
	}
	a.stop()

	db := openDB(t, a.dbPath())
	checks := []struct {
		q    string
		want int64
	}{
		{`SELECT count(*) FROM series`, 3},
		{`SELECT count(*) FROM points`, 4 + 1 + 2 + 1},
		{`SELECT count(*) FROM dead_letters WHERE reason LIKE 'series limit reached%'`, 4},
		// Each dead letter keeps the whole point: its series and its value.
		{`SELECT count(*) FROM dead_letters WHERE json_extract_string(decode(payload), '$.tags.s') IN ('d', 'e', 'f', 'g')
			AND json_extract(decode(payload), '$.fields.v')::DOUBLE = 1`, 4},
	}
	for _, c := range checks {
		if got := queryInt(t, db, c.q); got != c.want {
			t.Errorf("%s: %d, want %d", c.q, got, c.want)
		}
	}
}

package httpwrite

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/sinktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	t        *testing.T
	sink     *sinktest.Sink
	counters *inputs.Counters
	url      string
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	f := &fixture{t: t, sink: sinktest.New(), counters: new(inputs.Counters)}
	h, err := NewHandler(opts, f.sink, f.counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	f.url = srv.URL
	return f
}

type answer struct {
	status int
	header http.Header
	body   map[string]string
}

func (f *fixture) do(method, path string, body io.Reader, header ...string) answer {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			f.t.Fatalf("answer is not JSON: %s", raw)
		}
		a.body = map[string]string{}
		for k, v := range m {
			a.body[k] = fmt.Sprint(v)
		}
	}
	return a
}

func (f *fixture) post(path, body string, header ...string) answer {
	f.t.Helper()
	return f.do(http.MethodPost, path, strings.NewReader(body), header...)
}

// settled fails unless every line received is accounted for.
func (f *fixture) settled() inputs.CounterSnapshot {
	f.t.Helper()
	s := f.counters.Snapshot()
	if s.ReceivedPoints != s.PersistedPoints+s.RejectedPoints+s.DroppedPoints {
		f.t.Errorf("received %d != persisted %d + rejected %d + dropped %d", s.ReceivedPoints,
			s.PersistedPoints, s.RejectedPoints, s.DroppedPoints)
	}
	return s
}

func TestWriteV2AndV1(t *testing.T) {
	f := newFixture(t, Options{})
	if a := f.post("/api/v2/write?org=o&bucket=b1&precision=s", "cpu,host=a v=1 1700000000\nmem free=2i 1700000001"); a.status != 204 {
		t.Fatalf("v2 write: %d %v", a.status, a.body)
	}
	if a := f.post("/write?db=telegraf&rp=autogen&precision=ms", "cpu,host=a v=3 1700000000000"); a.status != 204 {
		t.Fatalf("v1 write: %d %v", a.status, a.body)
	}
	var got []string
	for _, p := range f.sink.Points() {
		got = append(got, p.Key+" "+time.Unix(0, p.Time).UTC().Format(time.RFC3339))
	}
	want := []string{"cpu,db=b1,host=a 2023-11-14T22:13:20Z", "mem,db=b1 2023-11-14T22:13:21Z", "cpu,db=telegraf,host=a 2023-11-14T22:13:20Z"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stored\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s := f.settled(); s.PersistedPoints != 3 || s.Payloads != 2 {
		t.Errorf("counters %+v", s)
	}
}

func TestDatabaseTagOptions(t *testing.T) {
	f := newFixture(t, Options{DatabaseTag: "bucket"})
	f.post("/api/v2/write?bucket=x", "cpu v=1 1")
	g := newFixture(t, Options{DisableDatabaseTag: true})
	g.post("/api/v2/write?bucket=x", "cpu v=1 1")
	if k := f.sink.Points()[0].Key; k != "cpu,bucket=x" {
		t.Errorf("key %q with DatabaseTag bucket", k)
	}
	if k := g.sink.Points()[0].Key; k != "cpu" {
		t.Errorf("key %q with the database tag disabled", k)
	}
}

func TestPartialWrite(t *testing.T) {
	f := newFixture(t, Options{})
	a := f.post("/api/v2/write?bucket=b", "cpu v=1 1\ncpu v=oops 2\ncpu v=3 3\n\x00\x01\x02\ncpu v=5 5\n")
	if a.status != 400 || a.body["code"] != "invalid" {
		t.Fatalf("answer %d %v, want 400 invalid", a.status, a.body)
	}
	for _, s := range []string{"line 2:", "cpu v=oops 2", "1 more bad lines", "3 points stored"} {
		if !strings.Contains(a.body["message"], s) {
			t.Errorf("message %q lacks %q", a.body["message"], s)
		}
	}
	if a.body["error"] != a.body["message"] {
		t.Errorf("v1 error %q differs from message", a.body["error"])
	}
	if n := len(f.sink.Points()); n != 3 {
		t.Errorf("stored %d points, want 3", n)
	}
	var lines []int
	for _, r := range f.sink.Rejects() {
		lines = append(lines, r.Line)
	}
	if fmt.Sprint(lines) != "[2 4]" {
		t.Errorf("rejected lines %v, want [2 4]", lines)
	}
	if s := f.settled(); s.RejectedPoints != 2 {
		t.Errorf("counters %+v", s)
	}
}

func TestBodyLimits(t *testing.T) {
	f := newFixture(t, Options{MaxBodyBytes: 1000})
	big := strings.Repeat("cpu v=1 1\n", 200)
	if a := f.post("/api/v2/write", big); a.status != 413 || a.body["code"] != "request too large" {
		t.Errorf("oversized body: %d %v", a.status, a.body)
	}
	// Without a Content-Length the limit bites while reading.
	if a := f.do("POST", "/api/v2/write", io.MultiReader(strings.NewReader(big))); a.status != 413 {
		t.Errorf("oversized chunked body: %d %v", a.status, a.body)
	}
	// A gzip bomb: a few hundred bytes that expand to 10 MB.
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	zw.Write(bytes.Repeat([]byte("cpu v=1 1\n"), 1<<20))
	zw.Close()
	g := newFixture(t, Options{MaxBodyBytes: 100000})
	if a := g.post("/api/v2/write", bomb.String(), "Content-Encoding", "gzip"); a.status != 413 || !strings.Contains(a.body["message"], "expands") {
		t.Errorf("gzip bomb: %d %v (%d bytes compressed)", a.status, a.body, bomb.Len())
	}
	if s := g.settled(); s.Oversize != 1 || s.ReceivedBytes > 100001 {
		t.Errorf("counters after the bomb %+v", s)
	}
	var small bytes.Buffer
	zw = gzip.NewWriter(&small)
	zw.Write([]byte("cpu v=1 1\ncpu v=2 2\n"))
	zw.Close()
	if a := f.post("/api/v2/write", small.String(), "Content-Encoding", "gzip"); a.status != 204 {
		t.Errorf("gzip body: %d %v", a.status, a.body)
	}
	if a := f.post("/api/v2/write", "not gzip", "Content-Encoding", "gzip"); a.status != 400 {
		t.Errorf("bad gzip: %d %v", a.status, a.body)
	}
	if a := f.post("/api/v2/write", "x", "Content-Encoding", "br"); a.status != 415 {
		t.Errorf("brotli: %d %v", a.status, a.body)
	}
	if s := f.settled(); s.Oversize != 2 || s.PersistedPoints != 2 {
		t.Errorf("counters %+v", s)
	}
}

func TestGarbageBody(t *testing.T) {
	f := newFixture(t, Options{})
	garbage := make([]byte, 1<<20)
	mrand.New(mrand.NewSource(1)).Read(garbage)
	if a := f.post("/api/v2/write", string(garbage)); a.status != 400 {
		t.Errorf("garbage: %d %v", a.status, a.body)
	}
	if a := f.post("/api/v2/write", "cpu v=1 1"); a.status != 204 {
		t.Errorf("after garbage: %d %v", a.status, a.body)
	}
	f.settled()
}

func TestBackpressureAndFailure(t *testing.T) {
	f := newFixture(t, Options{})
	f.sink.PushBack(1, 3*time.Second)
	a := f.post("/api/v2/write", "cpu v=1 1")
	if a.status != 503 || a.header.Get("Retry-After") != "3" {
		t.Errorf("pushed back: %d Retry-After %q %v", a.status, a.header.Get("Retry-After"), a.body)
	}
	if a := f.post("/api/v2/write", "cpu v=1 1"); a.status != 204 {
		t.Errorf("after recovery: %d %v", a.status, a.body)
	}
	f.sink.Fail(errors.New("disk on fire"))
	if a := f.post("/api/v2/write", "cpu v=1 1"); a.status != 500 || !strings.Contains(a.body["message"], "disk on fire") {
		t.Errorf("failing sink: %d %v", a.status, a.body)
	}
	if s := f.settled(); s.DroppedPoints != 2 || s.PersistedPoints != 1 || s.Throttled != 1 || s.WriteErrors != 1 {
		t.Errorf("counters %+v", s)
	}
}

func TestToken(t *testing.T) {
	f := newFixture(t, Options{Token: "s3cret"})
	for _, c := range []struct {
		path   string
		header []string
		want   int
	}{
		{"/api/v2/write", nil, 401},
		{"/api/v2/write", []string{"Authorization", "Token wrong"}, 401},
		{"/api/v2/write", []string{"Authorization", "Token s3cret"}, 204},
		{"/api/v2/write", []string{"Authorization", "Bearer s3cret"}, 204},
		{"/write?db=x&u=me&p=s3cret", nil, 204},
		{"/write?db=x&u=me&p=nope", nil, 401},
	} {
		if a := f.post(c.path, "cpu v=1 1", c.header...); a.status != c.want {
			t.Errorf("%s %v: %d, want %d", c.path, c.header, a.status, c.want)
		}
	}
	req, _ := http.NewRequest("POST", f.url+"/write", strings.NewReader("cpu v=1 1"))
	req.SetBasicAuth("me", "s3cret")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Errorf("basic auth: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Ping and health need no token.
	if a := f.do("GET", "/ping", nil); a.status != 204 {
		t.Errorf("ping with a token configured: %d", a.status)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrent: 1, QueueTimeout: 50 * time.Millisecond})
	f.sink.Delay(400 * time.Millisecond)
	var wg sync.WaitGroup
	statuses := make([]int, 3)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", f.url+"/api/v2/write", strings.NewReader("cpu v=1 1"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
			if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		}()
	}
	wg.Wait()
	n429 := 0
	for _, s := range statuses {
		if s == 429 {
			n429++
		}
	}
	if n429 != 2 || f.counters.Throttled.Load() != 2 {
		t.Errorf("statuses %v, throttled %d: want one 204 and two 429", statuses, f.counters.Throttled.Load())
	}
}

func TestPingHealthAndErrors(t *testing.T) {
	f := newFixture(t, Options{})
	a := f.do("GET", "/ping", nil)
	if a.status != 204 || a.header.Get("X-Influxdb-Version") == "" || a.header.Get("X-Influxdb-Build") != "OSS" {
		t.Errorf("ping: %d %v", a.status, a.header)
	}
	if a := f.do("HEAD", "/ping", nil); a.status != 204 {
		t.Errorf("HEAD ping: %d", a.status)
	}
	if a := f.do("GET", "/ping?verbose=true", nil); a.status != 200 || a.body["version"] != DefaultVersion {
		t.Errorf("verbose ping: %d %v", a.status, a.body)
	}
	if a := f.do("GET", "/health", nil); a.status != 200 || a.body["status"] != "pass" {
		t.Errorf("health: %d %v", a.status, a.body)
	}
	if a := f.do("GET", "/api/v2/write", nil); a.status != 405 {
		t.Errorf("GET write: %d", a.status)
	}
	if a := f.do("GET", "/query", nil); a.status != 404 || a.body["code"] != "not found" {
		t.Errorf("unknown path: %d %v", a.status, a.body)
	}
	if a := f.post("/api/v2/write?precision=fortnight", "cpu v=1 1"); a.status != 400 || !strings.Contains(a.body["message"], "fortnight") {
		t.Errorf("bad precision: %d %v", a.status, a.body)
	}
	if a := f.post("/api/v2/write", ""); a.status != 204 || f.sink.Calls() != 0 {
		t.Errorf("empty body: %d, %d sink calls", a.status, f.sink.Calls())
	}
}

func TestServerTLSAndStop(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	sink := sinktest.New()
	counters := new(inputs.Counters)
	s, err := NewServer(Options{Addr: "127.0.0.1:0", TLSCertFile: cert, TLSKeyFile: key}, sink, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(cert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	// A write in flight when Stop is called is still stored and answered.
	sink.Delay(200 * time.Millisecond)
	done := make(chan int, 1)
	go func() {
		resp, err := client.Post("https://"+s.Addr().String()+"/api/v2/write", "text/plain", strings.NewReader("cpu v=1 1"))
		if err != nil {
			t.Error(err)
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	waitFor(t, func() bool { return counters.Payloads.Load() == 1 })
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status := <-done; status != 204 || len(sink.Points()) != 1 {
		t.Errorf("write during Stop: %d, %d points stored", status, len(sink.Points()))
	}
	if counters.Connections.Load() != 0 || counters.ConnectionsAccepted.Load() != 1 {
		t.Errorf("connections %d, accepted %d", counters.Connections.Load(), counters.ConnectionsAccepted.Load())
	}
	if _, err := NewServer(Options{TLSCertFile: cert}, sink, counters, nil); err == nil {
		t.Error("NewServer accepted a certificate without a key")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fpagent test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}

package influx

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fpagent/fpagent/internal/outputs"
)

func TestWriteURL(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		want    string
		wantErr string // part of the error
	}{
		{"v1 base URL", Config{URL: "http://h:8086", Database: "db", RetentionPolicy: "rp"}, "http://h:8086/write?db=db&rp=rp", ""},
		{"v1 base URL with a slash", Config{URL: "http://h:8086/", API: "v1", Database: "my db"}, "http://h:8086/write?db=my+db", ""},
		{"v1 without a database", Config{URL: "https://h"}, "https://h/write", ""},
		{"v1 full path kept", Config{URL: "http://vm:8428/influx/write?extra=1", Database: "db"}, "http://vm:8428/influx/write?db=db&extra=1", ""},
		{"v2", Config{URL: "https://h:8086", API: "v2", Org: "my org", Bucket: "b"}, "https://h:8086/api/v2/write?bucket=b&org=my+org&precision=ns", ""},
		{"v2 full path kept", Config{URL: "http://h/proxy/api/v2/write", API: "v2", Bucket: "b"}, "http://h/proxy/api/v2/write?bucket=b&precision=ns", ""},
		{"v2 precision forced to ns", Config{URL: "http://h?precision=s", API: "v2"}, "http://h/api/v2/write?precision=ns", ""},
		{"bad scheme", Config{URL: "ftp://h:21"}, "", "want http://host:port"},
		{"no scheme", Config{URL: "h:8086"}, "", "want http://host:port"},
		{"no host", Config{URL: "http:///write"}, "", "want http://host:port"},
		{"unparsable", Config{URL: "http://h:port"}, "", "url"},
		{"bad api", Config{URL: "http://h", API: "v3"}, "", "want v1 or v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := WriteURL(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("WriteURL = %q, %v; want an error mentioning %q", got, err, tt.wantErr)
				}
				if _, nerr := New(tt.cfg); nerr == nil {
					t.Fatal("New accepted a config WriteURL refuses")
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("WriteURL = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// request is what the test server saw.
type request struct {
	method, path, query, auth, encoding, ctype, agent string
	body                                              []byte // decompressed
	user, pass                                        string
	basic                                             bool
}

// server answers every request with status, header and msg, and records it.
type server struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []request
}

func newServer(t *testing.T, status int, header http.Header, msg string) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rq := request{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization"),
			encoding: r.Header.Get("Content-Encoding"), ctype: r.Header.Get("Content-Type"), agent: r.UserAgent()}
		rq.user, rq.pass, rq.basic = r.BasicAuth()
		var body io.Reader = r.Body
		if rq.encoding == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, "bad gzip: "+err.Error(), http.StatusTeapot)
				return
			}
			body = zr
		}
		var err error
		if rq.body, err = io.ReadAll(body); err != nil {
			http.Error(w, "bad body: "+err.Error(), http.StatusTeapot)
			return
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, rq)
		s.mu.Unlock()
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		io.WriteString(w, msg)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.reqs...)
}

func newSender(t *testing.T, cfg Config) *Sender {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func batch(lp string) *outputs.Batch { return &outputs.Batch{LP: []byte(lp)} }

func TestSendMapsStatus(t *testing.T) {
	type kind int
	const (
		accepted kind = iota
		permanent
		tooLarge
		retryAfter
		retried
	)
	date := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		status     int
		retryAfter string
		want       kind
		after      [2]time.Duration // RetryAfterError.After within [0], [1]
	}{
		{200, "", accepted, [2]time.Duration{}},
		{204, "", accepted, [2]time.Duration{}},
		{400, "", permanent, [2]time.Duration{}},
		{422, "", permanent, [2]time.Duration{}},
		{413, "", tooLarge, [2]time.Duration{}},
		{429, "7", retryAfter, [2]time.Duration{7 * time.Second, 7 * time.Second}},
		{503, " 12 ", retryAfter, [2]time.Duration{12 * time.Second, 12 * time.Second}},
		{503, date, retryAfter, [2]time.Duration{20 * time.Second, 30 * time.Second}},
		{429, "", retryAfter, [2]time.Duration{0, 0}},
		{503, "soon", retryAfter, [2]time.Duration{0, 0}},
		{401, "", retried, [2]time.Duration{}},
		{403, "", retried, [2]time.Duration{}},
		{404, "", retried, [2]time.Duration{}},
		{500, "", retried, [2]time.Duration{}},
		{502, "", retried, [2]time.Duration{}},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status)+"/"+tt.retryAfter, func(t *testing.T) {
			h := http.Header{}
			if tt.retryAfter != "" {
				h.Set("Retry-After", tt.retryAfter)
			}
			srv := newServer(t, tt.status, h, "server says why\n")
			s := newSender(t, Config{URL: srv.URL})
			err := s.Send(context.Background(), batch("m v=1 1\n"))

			var perm *outputs.PermanentError
			var ra *outputs.RetryAfterError
			isPerm, isLarge, isRA := errors.As(err, &perm), errors.Is(err, outputs.ErrTooLarge), errors.As(err, &ra)
			var got kind
			switch {
			case err == nil:
				got = accepted
			case isPerm && !isLarge && !isRA:
				got = permanent
			case isLarge && !isPerm && !isRA:
				got = tooLarge
			case isRA && !isPerm && !isLarge:
				got = retryAfter
			case !isPerm && !isLarge && !isRA:
				got = retried
			default:
				t.Fatalf("error %v is of several kinds: permanent %v, too large %v, retry-after %v", err, isPerm, isLarge, isRA)
			}
			if got != tt.want {
				t.Fatalf("status %d: got kind %d (%v), want kind %d", tt.status, got, err, tt.want)
			}
			if err != nil && (!strings.Contains(err.Error(), "server says why") || !strings.Contains(err.Error(), http.StatusText(tt.status))) {
				t.Errorf("error %q does not carry the status and the server's message", err)
			}
			if got == retryAfter && (ra.After < tt.after[0] || ra.After > tt.after[1]) {
				t.Errorf("Retry-After %q read as %s, want %s to %s", tt.retryAfter, ra.After, tt.after[0], tt.after[1])
			}
		})
	}
}

func TestSendBodyAndHeaders(t *testing.T) {
	lps := []string{
		"cpu,host=a v=1 1\ncpu,host=b v=2 2\n",
		"m s=\"a longer line, so that the second body differs in size\" 3\n",
	}
	for _, gz := range []bool{false, true} {
		srv := newServer(t, http.StatusNoContent, nil, "")
		s := newSender(t, Config{URL: srv.URL, API: "v2", Org: "o", Bucket: "b", Gzip: gz, UserAgent: "fpagent/test"})
		for _, lp := range lps {
			if err := s.Send(context.Background(), batch(lp)); err != nil {
				t.Fatalf("gzip %v: %v", gz, err)
			}
		}
		reqs := srv.requests()
		if len(reqs) != len(lps) {
			t.Fatalf("gzip %v: server saw %d requests, want %d", gz, len(reqs), len(lps))
		}
		wantEnc := map[bool]string{false: "", true: "gzip"}[gz]
		for i, r := range reqs {
			if string(r.body) != lps[i] {
				t.Errorf("gzip %v: body %d = %q, want %q", gz, i, r.body, lps[i])
			}
			if r.method != http.MethodPost || r.path != "/api/v2/write" || r.query != "bucket=b&org=o&precision=ns" {
				t.Errorf("gzip %v: %s %s?%s, want POST /api/v2/write?bucket=b&org=o&precision=ns", gz, r.method, r.path, r.query)
			}
			if r.encoding != wantEnc || r.ctype != "text/plain; charset=utf-8" || r.agent != "fpagent/test" {
				t.Errorf("gzip %v: Content-Encoding %q, Content-Type %q, User-Agent %q", gz, r.encoding, r.ctype, r.agent)
			}
		}
	}
}

func TestSendAuth(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		url  func(base string) string
		want request // auth, or basic user and pass
	}{
		{"none", Config{}, nil, request{}},
		{"token", Config{Token: "x"}, nil, request{auth: "Token x"}},
		{"basic", Config{Username: "u", Password: "p w"}, nil, request{basic: true, user: "u", pass: "p w"}},
		{"token wins over basic", Config{Token: "x", Username: "u", Password: "p"}, nil, request{auth: "Token x"}},
		{"basic from the URL", Config{}, func(b string) string { return strings.Replace(b, "://", "://u:p@", 1) },
			request{basic: true, user: "u", pass: "p"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, http.StatusNoContent, nil, "")
			tt.cfg.URL = srv.URL
			if tt.url != nil {
				tt.cfg.URL = tt.url(srv.URL)
			}
			if err := newSender(t, tt.cfg).Send(context.Background(), batch("m v=1 1\n")); err != nil {
				t.Fatal(err)
			}
			r := srv.requests()[0]
			if tt.want.basic {
				if !r.basic || r.user != tt.want.user || r.pass != tt.want.pass {
					t.Errorf("basic auth %v %q %q (Authorization %q), want %q %q", r.basic, r.user, r.pass, r.auth, tt.want.user, tt.want.pass)
				}
				return
			}
			if r.auth != tt.want.auth {
				t.Errorf("Authorization %q, want %q", r.auth, tt.want.auth)
			}
		})
	}
}

// No error string may show a password given in the URL, whether as user
// information or as InfluxDB 1.x's p= parameter.
func TestErrorsHideThePasswordInTheURL(t *testing.T) {
	const secret = "s3cr3t"
	srv := newServer(t, http.StatusInternalServerError, nil, "boom")
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close() // nothing listens there any more
	withUser := func(u string) string { return strings.Replace(u, "://", "://admin:"+secret+"@", 1) }

	for _, u := range []string{withUser(srv.URL), srv.URL + "/write?u=admin&p=" + secret, withUser(downURL), downURL + "/write?u=admin&p=" + secret} {
		s := newSender(t, Config{URL: u, Timeout: 5 * time.Second})
		err := s.Send(context.Background(), batch("m v=1 1\n"))
		if err == nil {
			t.Fatalf("%s: Send succeeded, want an error", u)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	for _, cfg := range []Config{
		{URL: "ftp://admin:" + secret + "@h"},
		{URL: "http://admin:" + secret + "@h:port"},
		{URL: "http://admin:" + secret + "@h", API: "v9"},
	} {
		_, err := New(cfg)
		if err == nil {
			t.Fatalf("New(%q, api %q) succeeded, want an error", cfg.URL, cfg.API)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

func TestSendGivesUpWithTheContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	s := newSender(t, Config{URL: srv.URL})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if err := s.Send(ctx, batch("m v=1 1\n")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send = %v, want context.Canceled", err)
	}
}

// lateReader is a RoundTripper that answers at once, as a server that refuses
// a request before reading it does, and reads the body afterwards: the
// http.RoundTripper contract allows that, and net/http's transport does it
// when the server answers while the request is still being written.
type lateReader struct {
	mu     sync.Mutex
	bodies [][]byte
	wg     sync.WaitGroup
}

func (l *lateReader) RoundTrip(r *http.Request) (*http.Response, error) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		time.Sleep(20 * time.Millisecond) // the caller has moved on by now, unless it waits for Close
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		l.mu.Lock()
		l.bodies = append(l.bodies, b)
		l.mu.Unlock()
	}()
	return &http.Response{StatusCode: http.StatusRequestEntityTooLarge, Status: "413 Request Entity Too Large",
		Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

// Send reuses its gzip buffer and its caller reuses the batch's memory: both
// must wait until the transport is done with a request's body.
func TestSendWaitsForTheTransportToReleaseTheBody(t *testing.T) {
	for _, gz := range []bool{false, true} {
		s := newSender(t, Config{URL: "http://127.0.0.1:1", Gzip: gz})
		lt := &lateReader{}
		s.client.Transport = lt
		lp := []byte("first v=1 1\n")
		if err := s.Send(context.Background(), &outputs.Batch{LP: lp}); !errors.Is(err, outputs.ErrTooLarge) {
			t.Fatalf("gzip %v: Send = %v, want ErrTooLarge", gz, err)
		}
		copy(lp, "secnd v=2 2\n") // as the forwarder's encoder does with the next batch
		if err := s.Send(context.Background(), &outputs.Batch{LP: lp}); !errors.Is(err, outputs.ErrTooLarge) {
			t.Fatalf("gzip %v: Send = %v, want ErrTooLarge", gz, err)
		}
		lt.wg.Wait()
		want := []string{"first v=1 1\n", "secnd v=2 2\n"}
		for i, b := range lt.bodies {
			if gz {
				zr, err := gzip.NewReader(bytes.NewReader(b))
				if err == nil {
					b, err = io.ReadAll(zr)
				}
				if err != nil {
					t.Errorf("gzip: body %d does not decompress: %v", i, err)
					continue
				}
			}
			if string(b) != want[i] {
				t.Errorf("gzip %v: the transport read body %d as %q, want %q", gz, i, b, want[i])
			}
		}
	}
}

// A server that refuses a large body before reading it: Send, which waits
// for the transport to let go of the body, must still return.
func TestSendLargeBodyRefusedUnread(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "request entity too large", http.StatusRequestEntityTooLarge)
	}))
	defer srv.Close()
	lp := bytes.Repeat([]byte("m,host=a value=1.5 1700000000000000000\n"), 200_000) // ~8 MB
	for _, gz := range []bool{false, true} {
		s := newSender(t, Config{URL: srv.URL, Gzip: gz, Timeout: 10 * time.Second})
		for range 3 {
			if err := s.Send(context.Background(), &outputs.Batch{LP: lp}); !errors.Is(err, outputs.ErrTooLarge) {
				t.Fatalf("gzip %v: Send = %v, want ErrTooLarge", gz, err)
			}
		}
	}
}

func TestSendEmptyBatch(t *testing.T) {
	srv := newServer(t, http.StatusNoContent, nil, "")
	if err := newSender(t, Config{URL: srv.URL}).Send(context.Background(), &outputs.Batch{}); err != nil {
		t.Fatal(err)
	}
	if r := srv.requests(); len(r) != 1 || len(r[0].body) != 0 {
		t.Fatalf("server saw %+v, want one empty request", r)
	}
}

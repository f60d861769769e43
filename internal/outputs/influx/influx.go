// Package influx sends line protocol over HTTP to anything that speaks the
// InfluxDB write API: InfluxDB 1.x (/write), 2.x and 3.x (/api/v2/write),
// VictoriaMetrics, QuestDB, Telegraf's influxdb_listener, another fpagent.
package influx

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fpagent/fpagent/internal/outputs"
)

// Config configures a Sender.
type Config struct {
	// URL is the server's base URL (http://host:8086), to which the API's
	// path is added, or the full write URL when it has a path.
	URL             string
	API             string // "v1" (default): /write?db=&rp=; "v2": /api/v2/write?org=&bucket=
	Database        string // v1
	RetentionPolicy string // v1
	Org, Bucket     string // v2
	Token           string // Authorization: Token …
	Username        string // v1 basic authentication
	Password        string
	Gzip            bool
	Timeout         time.Duration // one request; default 30s
	TLS             *tls.Config   // nil: the system's roots
	UserAgent       string
}

// Sender posts batches; it is safe for one goroutine.
type Sender struct {
	cfg    Config
	url    string
	client *http.Client
	gz     *gzip.Writer
	body   bytes.Buffer
}

// New checks cfg and returns a Sender.
func New(cfg Config) (*Sender, error) {
	u, err := WriteURL(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.TLS
	tr.MaxIdleConnsPerHost = 2
	s := &Sender{cfg: cfg, url: u, client: &http.Client{Transport: tr, Timeout: cfg.Timeout}}
	if cfg.Gzip {
		s.gz, _ = gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	}
	return s, nil
}

// WriteURL is the URL a config posts to.
func WriteURL(cfg Config) (string, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without ue.URL, which would show a password
		}
		return "", fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("url %q: want http://host:port or https://host:port", redact(cfg.URL))
	}
	q := u.Query()
	switch cfg.API {
	case "", "v1":
		if u.Path == "" || u.Path == "/" {
			u.Path = "/write"
		}
		setIf(q, "db", cfg.Database)
		setIf(q, "rp", cfg.RetentionPolicy)
	case "v2":
		if u.Path == "" || u.Path == "/" {
			u.Path = "/api/v2/write"
		}
		setIf(q, "org", cfg.Org)
		setIf(q, "bucket", cfg.Bucket)
		q.Set("precision", "ns")
	default:
		return "", fmt.Errorf("api %q: want v1 or v2", cfg.API)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func setIf(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// Send posts b's lines and maps the answer: 2xx accepted; 400 and 422
// refused for good; 413 too large; 429 and 503 retried after Retry-After;
// anything else (a wrong token, a 404, a 500, no connection) retried.
func (s *Sender) Send(ctx context.Context, b *outputs.Batch) error {
	data := b.LP
	if s.gz != nil {
		s.body.Reset()
		s.gz.Reset(&s.body)
		s.gz.Write(b.LP)
		if err := s.gz.Close(); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		data = s.body.Bytes()
	}
	// The transport may go on reading a body after Do returned (when the
	// server answers before it read it all), and data's memory is reused
	// once Send returns (s.body here, the batch by the forwarder): wait
	// until the transport closed every body it was given.
	var bodies sync.WaitGroup
	defer bodies.Wait()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, http.NoBody)
	if err != nil {
		return err
	}
	if len(data) > 0 {
		req.GetBody = func() (io.ReadCloser, error) {
			bodies.Add(1)
			return &body{Reader: bytes.NewReader(data), close: sync.OnceFunc(bodies.Done)}, nil
		}
		req.Body, _ = req.GetBody()
		req.ContentLength = int64(len(data))
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if s.gz != nil {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if s.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", s.cfg.UserAgent)
	}
	switch {
	case s.cfg.Token != "":
		req.Header.Set("Authorization", "Token "+s.cfg.Token)
	case s.cfg.Username != "":
		req.SetBasicAuth(s.cfg.Username, s.cfg.Password)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without ue.URL, which would show a p= password
		}
		return fmt.Errorf("POST %s: %w", redact(s.url), err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so that the connection is reused
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("POST %s: %s: %s", redact(s.url), resp.Status, strings.TrimSpace(string(msg)))
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return &outputs.PermanentError{Err: err}
	case http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%w: %w", outputs.ErrTooLarge, err)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return &outputs.RetryAfterError{Err: err, After: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return err
}

// retryAfter reads a Retry-After header in seconds or as an HTTP date.
func retryAfter(h string) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// body is a request body that tells when the transport is done with it.
type body struct {
	*bytes.Reader
	close func()
}

func (b *body) Close() error {
	b.close()
	return nil
}

// redact keeps a password in the URL (user information, or InfluxDB 1.x's p=
// parameter) out of logs and errors.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	if q := p.Query(); q.Has("p") {
		q.Set("p", "xxxxx")
		p.RawQuery = q.Encode()
	}
	return p.Redacted()
}

// Close releases idle connections.
func (s *Sender) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

var _ outputs.Sender = (*Sender)(nil)

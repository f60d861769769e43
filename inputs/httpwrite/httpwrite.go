// Package httpwrite accepts InfluxDB line protocol over HTTP, compatible with
// InfluxDB clients and Telegraf: POST /write (v1), POST /api/v2/write (v2),
// GET|HEAD /ping and GET /health.
//
// A write is answered 204 only once the sink has made its points durable. A
// body with bad lines stores the good ones and answers 400 naming the first
// bad line; under backpressure the answer is 503 with Retry-After, over the
// request limit 429 with Retry-After, so clients retry later.
package httpwrite

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/lineproto"
	"github.com/fpagent/fpagent/storage"
)

// Defaults applied to zero option values.
const (
	DefaultAddr          = "127.0.0.1:8186"
	DefaultMaxBodyBytes  = 32 << 20
	DefaultMaxConcurrent = 64
	DefaultQueueTimeout  = time.Second
	DefaultRetryAfter    = time.Second
	DefaultDatabaseTag   = "db"
	DefaultVersion       = "1.8.10"
	DefaultReadTimeout   = time.Minute
	DefaultIdleTimeout   = 2 * time.Minute
)

// Options configure the handler and its server. Zero values take the defaults.
type Options struct {
	Addr          string        // listen address of Server; default DefaultAddr
	MaxBodyBytes  int64         // bound on a body, and on what a gzip body expands to; more is 413; default 32 MiB
	MaxConcurrent int           // write requests served at once; default 64
	QueueTimeout  time.Duration // how long a request over MaxConcurrent waits for its turn before 429; default 1 s
	RetryAfter    time.Duration // Retry-After of 429 and 503 when storage gives no hint; default 1 s
	// Token, when set, is required of every write: "Authorization: Token
	// <token>" (or Bearer), v1's p=<token> query parameter, or the password
	// of basic auth. Wrong or missing is 401.
	Token string
	// DatabaseTag is the tag that keeps the database (v1 db) or bucket (v2)
	// name of a write, so that several writers stay apart; it replaces a tag
	// of the same key in the lines. Default "db"; see DisableDatabaseTag.
	DatabaseTag        string
	DisableDatabaseTag bool
	Version            string // X-Influxdb-Version clients see in /ping; default "1.8.10"
	MaxRejectBytes     int    // bytes of a bad line kept with its reject; default lineproto.DefaultMaxRejectBytes

	// Server only.
	TLSCertFile, TLSKeyFile string        // both set: serve HTTPS
	ReadTimeout             time.Duration // whole request, body included; default 1 min
	IdleTimeout             time.Duration // keep-alive; default 2 min
}

func (o *Options) setDefaults() error {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.QueueTimeout == 0 {
		o.QueueTimeout = DefaultQueueTimeout
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = DefaultRetryAfter
	}
	if o.DatabaseTag == "" {
		o.DatabaseTag = DefaultDatabaseTag
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if o.MaxRejectBytes == 0 {
		o.MaxRejectBytes = lineproto.DefaultMaxRejectBytes
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxBodyBytes < 0 || o.MaxConcurrent < 0 || o.QueueTimeout < 0 || o.RetryAfter < 0 ||
		o.MaxRejectBytes < 0 || o.ReadTimeout < 0 || o.IdleTimeout < 0 {
		return fmt.Errorf("http input: negative option: use 0 for the default or a positive value")
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return fmt.Errorf("http input: TLS needs both a certificate file (%q) and a key file (%q)", o.TLSCertFile, o.TLSKeyFile)
	}
	return nil
}

// Handler serves the InfluxDB write API.
type Handler struct {
	opts     Options
	sink     inputs.Sink
	counters *inputs.Counters
	log      *slog.Logger
	slots    chan struct{}
	bufs     sync.Pool
	batches  sync.Pool
	gzips    sync.Pool
}

// NewHandler returns the write API handler. counters are this input's (nil:
// counted privately); a nil log discards.
func NewHandler(opts Options, sink inputs.Sink, counters *inputs.Counters, log *slog.Logger) (*Handler, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if counters == nil {
		counters = new(inputs.Counters) // counted, but seen by no one
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := &Handler{opts: opts, sink: sink, counters: counters, log: log.With("input", "http"),
		slots: make(chan struct{}, opts.MaxConcurrent)}
	h.bufs.New = func() any { return new(bytes.Buffer) }
	// A batch holds lineproto.Parse's points only.
	h.batches.New = func() any { return &storage.Batch{Normalized: true} }
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Influxdb-Version", h.opts.Version)
	w.Header().Set("X-Influxdb-Build", "OSS")
	switch r.URL.Path {
	case "/write", "/api/v2/write":
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			h.fail(w, http.StatusMethodNotAllowed, "method not allowed", r.Method+" "+r.URL.Path+": use POST")
			return
		}
		h.write(w, r)
	case "/ping":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			h.fail(w, http.StatusMethodNotAllowed, "method not allowed", r.Method+" /ping: use GET or HEAD")
			return
		}
		if r.URL.Query().Get("verbose") == "true" {
			writeJSON(w, http.StatusOK, map[string]string{"version": h.opts.Version})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "/health":
		writeJSON(w, http.StatusOK, map[string]any{"name": "fpagent", "message": "ready for writes",
			"status": "pass", "checks": []any{}, "version": h.opts.Version})
	default:
		h.fail(w, http.StatusNotFound, "not found", "no such endpoint "+r.URL.Path+": writes go to /write or /api/v2/write")
	}
}

func (h *Handler) write(w http.ResponseWriter, r *http.Request) {
	h.counters.Payloads.Add(1)
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Token realm="fpagent"`)
		h.fail(w, http.StatusUnauthorized, "unauthorized", "missing or wrong token: send Authorization: Token <token>")
		return
	}
	q := r.URL.Query()
	prec, err := lineproto.ParsePrecision(q.Get("precision"))
	if err != nil {
		h.fail(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	var tags []storage.Tag
	db := q.Get("db")
	if r.URL.Path == "/api/v2/write" {
		db = q.Get("bucket")
	}
	if db != "" && !h.opts.DisableDatabaseTag {
		tags = []storage.Tag{{Key: h.opts.DatabaseTag, Value: db}}
	}
	if !h.acquire(r.Context()) {
		h.counters.Throttled.Add(1)
		h.retryLater(w, http.StatusTooManyRequests, "too many requests",
			fmt.Sprintf("over max_concurrent (%d) write requests: retry later, or raise the limit", h.opts.MaxConcurrent), 0)
		return
	}
	defer func() { <-h.slots }()

	bp := h.bufs.Get().(*bytes.Buffer)
	defer h.putBuf(bp)
	status, code, msg := h.readBody(w, r, bp)
	if status != 0 {
		h.fail(w, status, code, msg)
		return
	}
	b := h.batches.Get().(*storage.Batch)
	defer h.putBatch(b)
	n, nbad := lineproto.Parse(b, bp.Bytes(), lineproto.Meta{Source: "http", Origin: r.RemoteAddr, Received: time.Now(),
		Precision: prec, Tags: tags, MaxRejectBytes: h.opts.MaxRejectBytes})
	h.counters.ReceivedPoints.Add(uint64(n + nbad))
	if n+nbad > 0 {
		if err := h.sink.WriteBatch(r.Context(), b); err != nil {
			h.counters.DroppedPoints.Add(uint64(n + nbad))
			switch {
			case errors.Is(err, storage.ErrBackpressure):
				h.counters.Backpressure.Add(1)
				h.counters.Throttled.Add(1)
				h.retryLater(w, http.StatusServiceUnavailable, "unavailable", err.Error(), storage.RetryAfter(err, 0))
			case r.Context().Err() != nil:
				// The client is gone; nobody reads an answer.
			default:
				h.counters.WriteErrors.Add(1)
				h.log.Error("cannot store a write", "peer", r.RemoteAddr, "points", n, "err", err)
				h.fail(w, http.StatusInternalServerError, "internal error", "cannot store the points: "+err.Error())
			}
			return
		}
		// The store moves points past its series limit to the rejects.
		n, nbad = len(b.Points), len(b.Rejects)
		h.counters.PersistedPoints.Add(uint64(n))
		h.counters.RejectedPoints.Add(uint64(nbad))
	}
	if nbad == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	first := b.Rejects[0]
	if first.Line > 0 {
		msg = fmt.Sprintf("partial write: line %d: %s: %q", first.Line, first.Reason, cut(first.Payload, 100))
	} else {
		msg = fmt.Sprintf("partial write: %s", first.Reason)
	}
	if nbad > 1 {
		msg += fmt.Sprintf("; %d more bad lines", nbad-1)
	}
	msg += fmt.Sprintf("; %d points stored", n)
	h.fail(w, http.StatusBadRequest, "invalid", msg)
}

// readBody reads the (possibly gzipped) body into buf within MaxBodyBytes. It
// returns a status and error when it cannot.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) (int, string, string) {
	max := h.opts.MaxBodyBytes
	tooLarge := fmt.Sprintf("body over max_body_bytes (%d): split the write into smaller batches", max)
	if r.ContentLength > max {
		h.counters.Oversize.Add(1)
		return http.StatusRequestEntityTooLarge, "request too large", tooLarge
	}
	body := &countingReader{r: http.MaxBytesReader(w, r.Body, max), c: &h.counters.ReceivedBytes}
	var src io.Reader = body
	switch enc := strings.ToLower(r.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip":
		zr, _ := h.gzips.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(body)
		} else {
			err = zr.Reset(body)
		}
		if err != nil {
			return h.bodyError(err, tooLarge, "cannot read the gzip body: ")
		}
		defer h.gzips.Put(zr)
		src = zr
		tooLarge = fmt.Sprintf("gzip body expands over max_body_bytes (%d): split the write into smaller batches", max)
	default:
		return http.StatusUnsupportedMediaType, "unsupported media type", fmt.Sprintf("Content-Encoding %q: send gzip or no encoding", enc)
	}
	if r.ContentLength > 0 && r.ContentLength < int64(buf.Cap()) {
		buf.Grow(int(r.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(src, max+1))
	if err != nil {
		return h.bodyError(err, tooLarge, "cannot read the body: ")
	}
	if n > max {
		h.counters.Oversize.Add(1)
		return http.StatusRequestEntityTooLarge, "request too large", tooLarge
	}
	return 0, "", ""
}

func (h *Handler) bodyError(err error, tooLarge, prefix string) (int, string, string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		h.counters.Oversize.Add(1)
		return http.StatusRequestEntityTooLarge, "request too large", tooLarge
	}
	return http.StatusBadRequest, "invalid", prefix + err.Error()
}

// maxPooledBuf keeps the pool from holding on to the largest bodies.
const maxPooledBuf = 4 << 20

func (h *Handler) putBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBuf {
		b.Reset()
		h.bufs.Put(b)
	}
}

// putBatch returns a batch to the pool, without the strings its points held.
func (h *Handler) putBatch(b *storage.Batch) {
	if cap(b.Points) > maxPooledPoints {
		return
	}
	clear(b.Points)
	clear(b.Rejects)
	b.Points, b.Rejects = b.Points[:0], b.Rejects[:0]
	h.batches.Put(b)
}

const maxPooledPoints = 1 << 16

func (h *Handler) acquire(ctx context.Context) bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(h.opts.QueueTimeout)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (h *Handler) authorized(r *http.Request) bool {
	if h.opts.Token == "" {
		return true
	}
	var got string
	auth := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(auth, "Token "):
		got = strings.TrimPrefix(auth, "Token ")
	case strings.HasPrefix(auth, "Bearer "):
		got = strings.TrimPrefix(auth, "Bearer ")
	default:
		if _, p, ok := r.BasicAuth(); ok {
			got = p
		} else {
			got = r.URL.Query().Get("p")
		}
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(h.opts.Token)) == 1
}

func (h *Handler) retryLater(w http.ResponseWriter, status int, code, msg string, hint time.Duration) {
	if hint <= 0 {
		hint = h.opts.RetryAfter
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(hint.Seconds()))))
	h.fail(w, status, code, msg)
}

// fail answers in InfluxDB's error shape: v2's code and message, and v1's
// error, so that clients of either version show the message.
func (h *Handler) fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Influxdb-Error", msg)
	writeJSON(w, status, map[string]string{"code": code, "message": msg, "error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func cut(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

type countingReader struct {
	r io.Reader
	c interface{ Add(uint64) uint64 }
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.c.Add(uint64(n))
	return n, err
}

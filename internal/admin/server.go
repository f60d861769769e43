// Package admin is fpagent's local admin HTTP API: /stats, /metrics, /health,
// /ready, the latest record of a key and read-only SQL over DuckDB. It
// depends on small interfaces, not on the concrete store, so it is tested
// with fakes.
package admin

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fpagent/fpagent/internal/version"
)

// Records reads the latest record of a key (storage.Store implements it).
type Records interface {
	Get(ctx context.Context, key string) (record []byte, ok bool, err error)
}

// Options configures a Server. Every field may be left zero: what is missing
// is answered with 503 (no database, no records) or left out of /stats.
type Options struct {
	Logger  *slog.Logger
	Version version.Info
	Started time.Time // for uptime; zero = when New is called
	Token   string    // bearer token for every endpoint; "" = none (see SetLimits)
	Records Records
	DB      *sql.DB    // DuckDB, for /api/v1/query and the duckdb section of /stats
	Stats   func() any // storage stats; their JSON fields are the top level of /stats
	Inputs  func() any // per-input counters, the "inputs" section of /stats
	Outputs func() any // per-output figures, the "outputs" section of /stats; nil = none
	// Export writes the readings of each UTC day in [from, to] to Parquet
	// (POST /api/v1/export?from=&to=); nil = no such endpoint.
	Export   func(ctx context.Context, from, to time.Time) (any, error)
	Ready    func() (bool, string)       // nil = always ready
	Flush    func(context.Context) error // POST /api/v1/flush moves the WAL into DuckDB now; nil = no such endpoint
	Gatherer prometheus.Gatherer         // what /metrics serves; nil = 404
	Register prometheus.Registerer       // where the admin API's own metrics go; nil = nowhere

	QueryMaxRows         int           // default 10000
	QueryTimeout         time.Duration // default 10s
	MaxConcurrentQueries int           // default 4
	MaxQuerySize         int64         // request body bound; default 1 MiB
}

// Server serves the admin API. Use Handler with an http.Server.
type Server struct {
	opt     Options
	limits  atomic.Pointer[Limits]
	log     *slog.Logger
	mux     *http.ServeMux
	queries chan struct{} // semaphore of running queries
	m       *metrics
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	queries  *prometheus.CounterVec
}

// Limits are the settings that may change while the server runs (SIGHUP).
type Limits struct {
	Token        string
	QueryMaxRows int
	QueryTimeout time.Duration
}

// SetLimits replaces the running limits; zero numbers keep their current value.
// Requests under way finish with the limits they started with.
func (s *Server) SetLimits(l Limits) {
	cur := s.limits.Load()
	if l.QueryMaxRows <= 0 {
		l.QueryMaxRows = cur.QueryMaxRows
	}
	if l.QueryTimeout <= 0 {
		l.QueryTimeout = cur.QueryTimeout
	}
	s.limits.Store(&l)
}

// NewRegistry returns a registry of fpagent's own, with the Go and process
// collectors and fpagent_build_info; never the global one.
func NewRegistry(v version.Info) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "fpagent_build_info",
			Help:        "Always 1; the labels tell the version, commit and Go version of the running binary.",
			ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "goversion": v.GoVersion},
		}, func() float64 { return 1 }),
	)
	return reg
}

// New builds the server and registers its metrics on opt.Register.
func New(opt Options) (*Server, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Started.IsZero() {
		opt.Started = time.Now()
	}
	if opt.QueryMaxRows <= 0 {
		opt.QueryMaxRows = 10000
	}
	if opt.QueryTimeout <= 0 {
		opt.QueryTimeout = 10 * time.Second
	}
	if opt.MaxConcurrentQueries <= 0 {
		opt.MaxConcurrentQueries = 4
	}
	if opt.MaxQuerySize <= 0 {
		opt.MaxQuerySize = 1 << 20
	}
	s := &Server{opt: opt, log: opt.Logger, mux: http.NewServeMux(), queries: make(chan struct{}, opt.MaxConcurrentQueries)}
	s.limits.Store(&Limits{Token: opt.Token, QueryMaxRows: opt.QueryMaxRows, QueryTimeout: opt.QueryTimeout})
	s.m = &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fpagent_admin_requests_total", Help: "Admin API requests by handler and status code.",
		}, []string{"handler", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fpagent_admin_request_duration_seconds", Help: "Admin API request durations by handler.",
			Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10},
		}, []string{"handler"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fpagent_admin_queries_total", Help: "SQL queries by result: ok, refused, error, timeout, busy.",
		}, []string{"result"}),
	}
	if opt.Register != nil {
		cs := []prometheus.Collector{s.m.requests, s.m.duration, s.m.queries}
		if opt.Ready != nil {
			cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "fpagent_ready", Help: "1 while /ready answers 200 (storage caught up, inputs listening, MQTT connected), else 0.",
			}, func() float64 {
				if ok, _ := opt.Ready(); ok {
					return 1
				}
				return 0
			}))
		}
		for _, c := range cs {
			if err := opt.Register.Register(c); err != nil {
				return nil, err
			}
		}
	}
	s.handle("GET /health", "health", s.health)
	s.handle("GET /ready", "ready", s.ready)
	s.handle("GET /stats", "stats", s.stats)
	s.handle("GET /api/v1/records/{key...}", "records", s.record)
	s.handle("GET /api/v1/records", "records", s.record)
	if opt.Flush != nil {
		s.handle("POST /api/v1/flush", "flush", s.flush)
	}
	if opt.Export != nil {
		s.handle("POST /api/v1/export", "export", s.export)
	}
	s.handle("GET /api/v1/query", "query", s.query)
	s.handle("POST /api/v1/query", "query", s.query)
	if opt.Gatherer != nil {
		h := promhttp.HandlerFor(opt.Gatherer, promhttp.HandlerOpts{ErrorLog: slogPrinter{s.log}})
		s.handle("GET /metrics", "metrics", h.ServeHTTP)
	}
	s.handle("/", "other", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(r.URL.Path); allow != "" {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, r.Method+" "+r.URL.Path+" is not supported; use "+allow)
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path+
			"; try GET /stats, /metrics, /health, /ready, /api/v1/records/{key}, GET or POST /api/v1/query")
	})
	return s, nil
}

// allowedMethods names the methods of a known path, for 405 answers.
func allowedMethods(path string) string {
	switch {
	case path == "/api/v1/query":
		return "GET, POST"
	case path == "/api/v1/flush", path == "/api/v1/export":
		return "POST"
	case path == "/health", path == "/ready", path == "/stats", path == "/metrics",
		strings.HasPrefix(path, "/api/v1/records"):
		return "GET"
	}
	return ""
}

// Drain waits until no query is running and keeps new ones from starting
// (they answer 503 busy), so that the database can be closed under the API.
func (s *Server) Drain(ctx context.Context) error {
	for range cap(s.queries) {
		select {
		case s.queries <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("queries still running: %w", ctx.Err())
		}
	}
	return nil
}

// Handler returns the API's handler, authentication included.
func (s *Server) Handler() http.Handler { return s.mux }

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("serve /metrics", "err", fmt.Sprint(v...)) }

// statusWriter remembers the status code for the request counter.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) handle(pattern, name string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		if s.authorized(sw, r) {
			h(sw, r)
		}
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		s.m.requests.WithLabelValues(name, strconv.Itoa(sw.code)).Inc()
		s.m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	token := s.limits.Load().Token
	if token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1 {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="fpagent admin"`)
	writeError(w, http.StatusUnauthorized, "this admin API needs \"Authorization: Bearer <admin.token>\"")
	return false
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ok, reason := s.isReady()
	if !ok {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reason": reason})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
}

func (s *Server) isReady() (bool, string) {
	if s.opt.Ready == nil {
		return true, ""
	}
	return s.opt.Ready()
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{}
	if s.opt.Stats != nil {
		// The storage stats are the top level, as the seed's get_stats was.
		b, err := json.Marshal(s.opt.Stats())
		if err == nil {
			err = json.Unmarshal(b, &out)
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, "encode storage stats: "+err.Error())
			return
		}
	}
	if s.opt.Inputs != nil {
		out["inputs"] = s.opt.Inputs()
	}
	if s.opt.Outputs != nil {
		out["outputs"] = s.opt.Outputs()
	}
	if s.opt.DB != nil {
		out["duckdb"] = s.duckdbStats(r.Context())
	}
	ok, reason := s.isReady()
	out["ready"] = ok
	if !ok {
		out["ready_reason"] = reason
	}
	out["uptime_seconds"] = time.Since(s.opt.Started).Seconds()
	out["started_at"] = s.opt.Started.UTC().Format(time.RFC3339)
	out["version"] = s.opt.Version
	writeJSON(w, http.StatusOK, out)
}

// duckdbStats reads DuckDB's own figures; a failure is reported in place
// rather than failing /stats.
func (s *Server) duckdbStats(ctx context.Context) map[string]any {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := map[string]any{}
	var ver string
	if err := s.opt.DB.QueryRowContext(ctx, "SELECT version()").Scan(&ver); err != nil {
		out["error"] = err.Error()
		return out
	}
	out["version"] = ver
	row := s.opt.DB.QueryRowContext(ctx, `SELECT database_size, block_size, total_blocks, used_blocks, free_blocks,
		wal_size, memory_usage, memory_limit FROM pragma_database_size() WHERE database_name = current_database()`)
	var size, walSize, memUsage, memLimit string
	var blockSize, total, used, free int64
	if err := row.Scan(&size, &blockSize, &total, &used, &free, &walSize, &memUsage, &memLimit); err != nil {
		out["error"] = err.Error()
		return out
	}
	out["database_size"] = size
	out["block_size_bytes"] = blockSize
	out["total_blocks"] = total
	out["used_blocks"] = used
	out["free_blocks"] = free
	out["wal_size"] = walSize
	out["memory_usage"] = memUsage
	out["memory_limit"] = memLimit
	return out
}

func (s *Server) record(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if key == "" {
		key = r.URL.Query().Get("key")
	}
	if key == "" {
		writeError(w, http.StatusBadRequest, "name a key: GET /api/v1/records/{key} or /api/v1/records?key=...")
		return
	}
	if s.opt.Records == nil {
		writeError(w, http.StatusServiceUnavailable, "storage is not open")
		return
	}
	rec, ok, err := s.opt.Records.Get(r.Context(), key)
	switch {
	case err != nil:
		s.log.Warn("read record", "key", key, "err", err)
		writeError(w, http.StatusInternalServerError, "read record "+strconv.Quote(key)+": "+err.Error())
	case !ok:
		writeError(w, http.StatusNotFound, "no record for key "+strconv.Quote(key))
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(rec)
	}
}

// flush moves everything the WAL holds into DuckDB now, so that a query sees
// what was just written (flushes otherwise run every flush_interval).
func (s *Server) flush(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.limits.Load().QueryTimeout)
	defer cancel()
	start := time.Now()
	if err := s.opt.Flush(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "flush: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "flushed", "elapsed_seconds": time.Since(start).Seconds()})
}

// export writes Parquet files of whole UTC days: ?day=2026-11-25, or
// ?from=&to= (inclusive); without either, yesterday.
func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	day := func(key string) (time.Time, bool) {
		t, err := time.Parse(time.DateOnly, q.Get(key))
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s=%q: want a date such as 2026-11-25", key, q.Get(key)))
			return t, false
		}
		return t, true
	}
	var from, to time.Time
	var ok bool
	switch {
	case q.Has("day"):
		if from, ok = day("day"); !ok {
			return
		}
		to = from
	case q.Has("from") || q.Has("to"):
		if from, ok = day("from"); !ok {
			return
		}
		if to, ok = day("to"); !ok {
			return
		}
	default:
		from = time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
		to = from
	}
	if to.Before(from) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("to=%s is before from=%s", to.Format(time.DateOnly), from.Format(time.DateOnly)))
		return
	}
	if to.Sub(from) > 366*24*time.Hour {
		writeError(w, http.StatusBadRequest, "at most 367 days per request; export a year at a time")
		return
	}
	res, err := s.opt.Export(r.Context(), from, to)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "export: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"error": msg, "status": code})
}

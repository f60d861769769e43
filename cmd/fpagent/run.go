package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/internal/admin"
	"github.com/fpagent/fpagent/internal/config"
	"github.com/fpagent/fpagent/internal/outputs"
	"github.com/fpagent/fpagent/internal/sdnotify"
	"github.com/fpagent/fpagent/internal/version"
	"github.com/fpagent/fpagent/storage"
	"github.com/fpagent/fpagent/wal"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("fpagent", "fpagent [-config FILE]",
		"Run the agent: open the WAL and DuckDB (catching up on what the WAL holds), serve the\n"+
			"admin API, then listen on the enabled inputs. SIGTERM or SIGINT stops the inputs,\n"+
			"flushes everything into DuckDB and exits 0; a second signal exits at once. SIGHUP\n"+
			"re-reads the config file and applies log.level, admin.token, admin.query_max_rows\n"+
			"and admin.query_timeout; other changes need a restart and are logged as such.\n"+
			"Without -config the agent runs on the defaults: data in ./fpagent-data, every\n"+
			"listener on 127.0.0.1. See also: fpagent help.", stderr)
	path := fs.String("config", "", "config file (YAML); see agent.yaml.example")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fpagent: unknown command %q; run fpagent help\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	a := newAgent(*path, cfg, stderr)
	return a.run()
}

// input is what the agent needs of an input: Start listens and returns;
// Stop stops reading and waits until what was read is stored.
type input interface {
	Start() error
	Stop(ctx context.Context) error
}

type namedInput struct {
	name  string
	in    input
	addr  func() string         // where it listens (or what it connects to), once started
	ready func() (bool, string) // nil: ready once started; MQTT: connected and subscribed
}

type agent struct {
	cfgPath string
	cfg     *config.Config
	level   *slog.LevelVar
	log     *slog.Logger
	notify  *sdnotify.Notifier
	startAt time.Time

	store     *storage.Store
	counters  *inputs.Registry
	inputs    []namedInput
	outputs   []*outputs.Forwarder
	stopDaily chan struct{}
	adminSrv  *http.Server
	admin     *admin.Server
	adminAddr string      // where the admin API listens
	listening atomic.Bool // every input listens
	stopping  atomic.Bool
}

func newAgent(path string, cfg *config.Config, stderr io.Writer) *agent {
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Log.Level))
	return &agent{
		cfgPath: path, cfg: cfg, level: level,
		log:     newLogger(stderr, cfg.Log.Format, level),
		notify:  sdnotify.New(),
		startAt: time.Now(),
	}
}

// started is what systemd's READY=1 waits for: storage has caught up and
// every input has started. A broker that is down does not hold it back (the
// MQTT input keeps reconnecting), so a broker outage at boot does not make
// systemd give up on the agent.
func (a *agent) started() (bool, string) {
	switch {
	case a.stopping.Load():
		return false, "shutting down"
	case a.store == nil:
		return false, "storage is not open yet"
	case !a.listening.Load():
		return false, "inputs are not listening yet"
	}
	return a.store.Ready()
}

// ready is /ready: started, and every input able to take data (MQTT
// connected and subscribed).
func (a *agent) ready() (bool, string) {
	if ok, why := a.started(); !ok {
		return false, why
	}
	for _, in := range a.inputs {
		if in.ready == nil {
			continue
		}
		if ok, why := in.ready(); !ok {
			return false, why
		}
	}
	for _, o := range a.outputs {
		if ok, why := o.Healthy(); !ok {
			return false, why
		}
	}
	return true, ""
}

func (a *agent) status(s string) {
	if err := a.notify.Notify(sdnotify.Status(s)); err != nil {
		a.log.Warn("systemd notify", "err", err)
	}
}

// run starts storage, then the admin API, then the inputs (sinks before
// sources), waits for a signal, and stops in the reverse order.
func (a *agent) run() int {
	v := version.Get()
	a.log.Info("starting fpagent", "version", v.Version, "commit", v.Commit, "go", v.GoVersion,
		"config", orDefault(a.cfgPath, "none (defaults)"))
	// Signals are caught from the start, so that a SIGTERM during a long
	// recovery still stops cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	servePprof(a.log)
	code, err := a.start()
	if err != nil {
		a.log.Error("cannot start", "err", err)
		a.status("failed to start: " + err.Error())
		a.shutdown()
		return code
	}
	go a.announceReady()

	for sig := range sigs {
		if sig == syscall.SIGHUP {
			a.reload()
			continue
		}
		// A second SIGTERM or SIGINT takes the default action: exit at once.
		signal.Reset(syscall.SIGTERM, syscall.SIGINT)
		a.log.Info("stopping on signal; send it again to exit at once", "signal", sig.String(),
			"timeout", a.cfg.ShutdownTimeout.String())
		break
	}
	if !a.shutdown() {
		return exitFailure
	}
	return exitOK
}

// start opens everything; on error, what was opened stays recorded in a so
// that shutdown closes it.
func (a *agent) start() (int, error) {
	cfg := a.cfg
	a.status("checking data directories")
	minFree := int64(cfg.Storage.MaxWALSize)
	for _, d := range []struct{ dir, key string }{
		{cfg.DataDir, "data_dir"}, {cfg.WALDir(), "storage.base_dir"}, {dirOf(cfg.DBPath()), "storage.db_path"},
	} {
		if err := checkDir(d.dir, d.key, minFree); err != nil {
			return exitDataDir, err
		}
	}

	reg := admin.NewRegistry(version.Get())
	a.counters = inputs.NewRegistry()
	if err := reg.Register(a.counters); err != nil {
		return exitFailure, fmt.Errorf("register input metrics: %w", err)
	}

	a.status("opening storage")
	t0 := time.Now()
	store, err := storage.Open(cfg.DBPath(), storageConfig(cfg, a.log, reg))
	if err != nil {
		return storageExit(err), explainStorageError(cfg, err)
	}
	a.store = store
	ok, why := store.Ready()
	a.log.Info("storage open", "took", time.Since(t0).Round(time.Millisecond), "wal", cfg.WALDir(),
		"db", cfg.DBPath(), "ready", ok, "state", orDefault(why, "caught up"))

	srv, err := admin.New(admin.Options{
		Logger: a.log.With("component", "admin"), Version: version.Get(), Started: a.startAt,
		Token: cfg.Admin.Token, Records: store, DB: store.DB(),
		Stats:   func() any { return store.Stats() },
		Inputs:  func() any { return a.counters.Snapshot() },
		Outputs: func() any { return outputStats(a.outputs) },
		Export: func(ctx context.Context, from, to time.Time) (any, error) {
			return store.Export(ctx, from, to)
		},
		Ready: a.ready, Gatherer: reg, Register: reg, Flush: store.ForceFlush,
		QueryMaxRows: cfg.Admin.QueryMaxRows, QueryTimeout: cfg.Admin.QueryTimeout.D(),
		MaxConcurrentQueries: cfg.Admin.MaxConcurrentQueries,
	})
	if err != nil {
		return exitFailure, err
	}
	a.admin = srv
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return exitFailure, listenError("admin.listen", cfg.Admin.Listen, err)
	}
	a.adminAddr = ln.Addr().String()
	a.adminSrv = &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.With("component", "admin").Handler(), slog.LevelWarn),
	}
	go func() {
		if err := a.adminSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin API stopped", "err", err)
		}
	}()

	a.status("starting outputs")
	fwds, err := buildOutputs(cfg, store, a.log)
	if err != nil {
		return exitUsage, err
	}
	if err := reg.Register(outputs.NewCollector(fwds)); err != nil {
		return exitFailure, fmt.Errorf("register output metrics: %w", err)
	}
	for _, f := range fwds {
		f.Start()
		a.outputs = append(a.outputs, f)
	}
	if cfg.Export.Daily {
		a.stopDaily = make(chan struct{})
		go exportDaily(store, cfg.ExportDir(), a.log.With("component", "export"), a.stopDaily)
	}

	a.status("starting inputs")
	ins, err := buildInputs(cfg, store, a.counters, a.log)
	if err != nil {
		return exitUsage, err
	}
	for _, in := range ins {
		if err := in.in.Start(); err != nil {
			key := "inputs." + in.name + ".listen"
			return exitFailure, listenError(key, listenAddr(cfg, in.name), err)
		}
		a.inputs = append(a.inputs, in)
	}
	a.listening.Store(true)
	attrs := []any{"data_dir", cfg.DataDir, "wal", cfg.WALDir(), "db", cfg.DBPath(), "admin", a.adminAddr}
	for _, in := range a.inputs {
		attrs = append(attrs, in.name, in.addr())
	}
	a.log.Info("fpagent started", attrs...)
	if !isLoopback(a.adminAddr) && cfg.Admin.Token == "" {
		a.log.Warn("the admin API listens beyond this host without admin.token: anyone who reaches it can read every record", "admin", a.adminAddr)
	}
	if cfg.Inputs.HTTP.Enabled && !isLoopback(cfg.Inputs.HTTP.Listen) && cfg.Inputs.HTTP.Token == "" {
		a.log.Warn("the HTTP write API listens beyond this host without inputs.http.token: anyone who reaches it can write", "http", cfg.Inputs.HTTP.Listen)
	}
	return exitOK, nil
}

// announceReady tells systemd once storage has caught up and inputs listen.
func (a *agent) announceReady() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last := ""
	for range t.C {
		if a.stopping.Load() {
			return
		}
		ok, why := a.started()
		if ok {
			a.log.Info("ready", "after", time.Since(a.startAt).Round(time.Millisecond))
			if err := a.notify.Notify(sdnotify.Ready, sdnotify.Status("ready: "+a.listenSummary())); err != nil {
				a.log.Warn("systemd notify", "err", err)
			}
			return
		}
		if why != last {
			a.status(why)
			last = why
		}
	}
}

func (a *agent) listenSummary() string {
	parts := []string{"admin " + a.adminAddr}
	for _, in := range a.inputs {
		parts = append(parts, in.name+" "+in.addr())
	}
	return strings.Join(parts, ", ")
}

// shutdown stops the inputs, then the admin API, then closes storage (the
// final flush), logging how long each took. It reports whether everything
// stopped cleanly within shutdown_timeout.
func (a *agent) shutdown() bool {
	a.stopping.Store(true)
	if err := a.notify.Notify(sdnotify.Stopping, sdnotify.Status("stopping")); err != nil {
		a.log.Warn("systemd notify", "err", err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout.D())
	defer cancel()
	clean := true
	for i := len(a.inputs) - 1; i >= 0; i-- {
		in := a.inputs[i]
		t := time.Now()
		if err := in.in.Stop(ctx); err != nil {
			clean = false
			a.log.Error("input did not stop cleanly", "input", in.name, "err", err, "took", since(t))
			continue
		}
		a.log.Info("input stopped", "input", in.name, "took", since(t))
	}
	for _, o := range a.outputs {
		t := time.Now()
		if err := o.Stop(ctx); err != nil {
			clean = false
			a.log.Error("output did not stop cleanly", "output", o.Name(), "err", err, "took", since(t))
			continue
		}
		a.log.Info("output stopped; what it had not sent stays in the WAL", "output", o.Name(), "took", since(t))
	}
	if a.stopDaily != nil {
		close(a.stopDaily)
	}
	if a.adminSrv != nil {
		t := time.Now()
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		if err := a.adminSrv.Shutdown(actx); err != nil {
			a.log.Warn("admin API did not stop cleanly; closing its connections", "err", err)
			a.adminSrv.Close()
		}
		if err := a.admin.Drain(actx); err != nil {
			a.log.Warn("admin API: closing storage under a running query", "err", err)
		}
		acancel()
		a.log.Info("admin API stopped", "took", since(t))
	}
	if a.store != nil {
		t := time.Now()
		a.status("flushing into DuckDB")
		done := make(chan error, 1)
		go func() { done <- a.store.Close() }()
		select {
		case err := <-done:
			if err != nil {
				clean = false
				a.log.Error("storage did not close cleanly", "err", err, "took", since(t))
			} else {
				a.log.Info("storage flushed and closed", "took", since(t))
			}
		case <-ctx.Done():
			clean = false
			a.log.Error("storage did not finish its final flush within shutdown_timeout; what is left stays in the WAL and is flushed at the next start",
				"shutdown_timeout", a.cfg.ShutdownTimeout.String(), "took", since(t))
		}
	}
	a.log.Info("fpagent stopped", "took", since(start), "clean", clean)
	return clean
}

// reload re-reads the config file and applies what can change without
// losing data: log.level, admin.token, admin.query_max_rows and
// admin.query_timeout. Other changes are logged as needing a restart.
func (a *agent) reload() {
	if a.cfgPath == "" {
		a.log.Info("SIGHUP: no config file to reload (running on defaults)")
		return
	}
	next, err := config.Load(a.cfgPath)
	if err != nil {
		a.log.Error("SIGHUP: config not reloaded, the running one stays", "err", err)
		return
	}
	var applied []string
	cur := a.cfg
	if next.Log.Level != cur.Log.Level {
		a.level.Set(parseLevel(next.Log.Level))
		applied = append(applied, fmt.Sprintf("log.level %s -> %s", cur.Log.Level, next.Log.Level))
		cur.Log.Level = next.Log.Level
	}
	if next.Admin.Token != cur.Admin.Token {
		applied = append(applied, "admin.token")
	}
	if next.Admin.QueryMaxRows != cur.Admin.QueryMaxRows {
		applied = append(applied, fmt.Sprintf("admin.query_max_rows %d -> %d", cur.Admin.QueryMaxRows, next.Admin.QueryMaxRows))
	}
	if next.Admin.QueryTimeout != cur.Admin.QueryTimeout {
		applied = append(applied, fmt.Sprintf("admin.query_timeout %s -> %s", cur.Admin.QueryTimeout, next.Admin.QueryTimeout))
	}
	cur.Admin.Token, cur.Admin.QueryMaxRows, cur.Admin.QueryTimeout = next.Admin.Token, next.Admin.QueryMaxRows, next.Admin.QueryTimeout
	if a.admin != nil {
		a.admin.SetLimits(admin.Limits{Token: cur.Admin.Token, QueryMaxRows: cur.Admin.QueryMaxRows, QueryTimeout: cur.Admin.QueryTimeout.D()})
	}
	pending := config.Diff(cur, next)
	if len(applied) == 0 {
		applied = []string{"nothing changed that can be applied"}
	}
	attrs := []any{"file", a.cfgPath, "applied", strings.Join(applied, ", ")}
	if len(pending) > 0 {
		attrs = append(attrs, "changed_but_need_restart", strings.Join(pending, ", "))
	}
	a.log.Info("SIGHUP: config reloaded", attrs...)
	a.status("ready: " + a.listenSummary())
}

// isLoopback reports whether a listen address is reachable from this host only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func dirOf(path string) string {
	if i := strings.LastIndexAny(path, `/\`); i >= 0 {
		if i == 0 {
			return "/"
		}
		return path[:i]
	}
	return "."
}

// storageConfig maps the config file onto storage.Config.
func storageConfig(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) storage.Config {
	st := cfg.Storage
	return storage.Config{
		BaseDir:       cfg.WALDir(),
		MaxWALSize:    int64(st.MaxWALSize),
		MaxWALAge:     st.MaxWALAge.D(),
		NoPreallocate: !st.WALPreallocate,
		BatchSize:     st.BatchSize,
		FlushInterval: st.FlushInterval.D(),
		// 0 in the file means no spacing; storage reads 0 as its default.
		MinFlushInterval: cmp.Or(st.FlushMinInterval.D(), -1),
		Sync:             wal.SyncPolicy(st.Sync),
		SyncInterval:     st.SyncInterval.D(),
		CacheMaxKeys:     st.CacheMaxKeys,
		MaxSeries:        st.MaxSeries,
		DiskBudget:       int64(st.DiskBudget),
		StoreTimeout:     st.StoreTimeout.D(),
		MemoryLimit:      st.DuckDB.MemoryLimit,
		Threads:          st.DuckDB.Threads,
		FlushNice:        st.DuckDB.Nice,
		Logger:           log.With("component", "storage"),
		Registerer:       reg,
		Feeds:            feedConfigs(cfg),
		CursorDir:        cfg.OutputsDir(),
		ExportDir:        cfg.ExportDir(),
	}
}

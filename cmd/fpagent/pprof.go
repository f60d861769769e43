package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

// servePprof serves Go's profiler on $FPAGENT_PPROF_ADDR (e.g.
// 127.0.0.1:6060) when it is set: for developers measuring the agent under
// load, never on by default, and refused beyond loopback.
func servePprof(log *slog.Logger) {
	addr := os.Getenv("FPAGENT_PPROF_ADDR")
	if addr == "" {
		return
	}
	if !isLoopback(addr) {
		log.Warn("FPAGENT_PPROF_ADDR must be a loopback address such as 127.0.0.1:6060; profiler not started", "addr", addr)
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("profiler not started", "addr", addr, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("serving the Go profiler", "addr", ln.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
}

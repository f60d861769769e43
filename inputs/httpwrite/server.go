package httpwrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fpagent/fpagent/inputs"
)

// Server serves a Handler on its own listener, over HTTPS when Options has a
// certificate and key.
type Server struct {
	opts    Options
	handler *Handler
	srv     *http.Server
	ln      net.Listener
	log     *slog.Logger
	done    chan error
}

// NewServer returns a server for the write API; Start starts it. counters
// are this input's (nil: counted privately); a nil log discards.
func NewServer(opts Options, sink inputs.Sink, counters *inputs.Counters, log *slog.Logger) (*Server, error) {
	if counters == nil {
		counters = new(inputs.Counters)
	}
	h, err := NewHandler(opts, sink, counters, log)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: h.opts, handler: h, log: h.log}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       h.opts.ReadTimeout,
		IdleTimeout:       h.opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		ConnState: func(_ net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				counters.ConnectionsAccepted.Add(1)
				counters.Connections.Add(1)
			case http.StateClosed, http.StateHijacked:
				counters.Connections.Add(-1)
			}
		},
	}
	return s, nil
}

// Start listens and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("http input: cannot listen on %s: %w (set another address or free the port)", s.opts.Addr, err)
	}
	s.ln = ln
	s.done = make(chan error, 1)
	tls := s.opts.TLSCertFile != ""
	s.log.Info("listening for InfluxDB writes", "addr", ln.Addr().String(), "tls", tls)
	go func() {
		var err error
		if tls {
			err = s.srv.ServeTLS(ln, s.opts.TLSCertFile, s.opts.TLSKeyFile)
		} else {
			err = s.srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http input stopped serving", "err", err)
		}
		s.done <- err
	}()
	return nil
}

// Addr is the address listened on, once started.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Stop stops accepting and waits for the requests in flight, whose points
// are then stored (or refused with a status). If ctx ends first, the
// connections left are closed and Stop returns ctx.Err().
func (s *Server) Stop(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}

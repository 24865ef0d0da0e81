package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server serves /metrics, /healthz (liveness) and /readyz (readiness).
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Health reports whether the daemon is healthy; nil means healthy.
type Health func(ctx context.Context) error

// Listen binds addr (host:port; port 0 picks one) for m and health; opts
// add the readiness check (WithReady).
func Listen(addr string, m *Metrics, health Health, logger *slog.Logger, opts ...Option) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := options{readyTimeout: DefaultReadyTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	ready := o.ready
	if ready == nil {
		ready = func(ctx context.Context) error {
			if health == nil {
				return nil
			}
			if err := health(ctx); err != nil {
				return NotReady("unhealthy", err)
			}
			return nil
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		status, code := map[string]string{"status": "ok"}, http.StatusOK
		if health != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := health(ctx); err != nil {
				status, code = map[string]string{"status": "unhealthy", "error": err.Error()}, http.StatusServiceUnavailable
			}
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(status)
	})
	mux.Handle("GET /readyz", &readiness{check: ready, timeout: o.readyTimeout, log: logger})
	s := &Server{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}}
	return s, nil
}

// Addr returns the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}

// Shutdown stops the listener, waiting for scrapes in progress up to ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.ln.Close() // in case Serve never ran
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}

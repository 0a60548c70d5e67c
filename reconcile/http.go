package reconcile

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// serveHTTP serves the probes, the metrics and the webhooks on opts.Listen.
func serveHTTP(opts ServiceOptions, ready *atomic.Bool, errs chan<- error) (*http.Server, string, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not leading (or not started) yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if opts.Metrics != nil {
		mux.Handle("/metrics", opts.Metrics)
	}
	if opts.Hooks != nil {
		mux.Handle("/hook/", opts.Hooks)
	}
	l, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", opts.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	}()
	return srv, l.Addr().String(), nil
}

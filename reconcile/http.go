package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// HTTPOptions bound what the HTTP server of the service accepts: it faces
// Git hosts (webhooks) and so the network, and a slow or flooding client
// must not hold refit's memory or connections.
type HTTPOptions struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included: a client
	// that trickles its body is cut off.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling a request and writing its answer.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection left unused.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers; larger ones get 431.
	MaxHeaderBytes int
	// Profile serves Go's profiles at /debug/pprof/ on the main address.
	Profile bool
	// MaxInFlight caps the webhook and metrics requests handled at once;
	// beyond it a request gets 503 at once. Probes are not counted, so a
	// flood cannot fail the liveness probe.
	MaxInFlight int
	// MetricsListen, when set, serves /metrics on this address only (e.g.
	// a port reachable by Prometheus but not from outside), not on Listen.
	MetricsListen string
	// View, if set, is the live view, served at / (every path no other
	// handler takes). Its event stream is not counted in MaxInFlight: it
	// lives long and the view caps its own viewers.
	View http.Handler
}

// DefaultHTTPOptions: a webhook is a few kB sent at once, and a Git host
// waits about 10 s for the answer.
func DefaultHTTPOptions() HTTPOptions {
	return HTTPOptions{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10,
		MaxInFlight:       32,
	}
}

// withDefaults fills the fields left zero.
func (o HTTPOptions) withDefaults() HTTPOptions {
	d := DefaultHTTPOptions()
	for _, f := range []struct{ v, def *time.Duration }{
		{&o.ReadHeaderTimeout, &d.ReadHeaderTimeout}, {&o.ReadTimeout, &d.ReadTimeout},
		{&o.WriteTimeout, &d.WriteTimeout}, {&o.IdleTimeout, &d.IdleTimeout},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = d.MaxInFlight
	}
	return o
}

// serveHTTP serves the probes, the metrics, the webhooks and the view on
// opts.Listen.
func serveHTTP(opts ServiceOptions, ready *atomic.Bool, errs chan<- error) (*http.Server, string, error) {
	return serveHTTPWith(opts, opts.HTTP, ready, errs)
}

// serveHTTPWith is serveHTTP with its bounds. With a separate metrics
// address, that server stops when the returned one is shut down.
func serveHTTPWith(opts ServiceOptions, hopts HTTPOptions, ready *atomic.Bool, errs chan<- error) (*http.Server, string, error) {
	hopts = hopts.withDefaults()
	limit := newInFlightLimit(hopts.MaxInFlight)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not leading (or not started) yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if opts.Hooks != nil {
		mux.Handle("/hook/", limit.wrap(opts.Hooks))
	}
	if hopts.Profile {
		mountProfile(mux)
	}
	var metricsSrv *http.Server
	var metricsL net.Listener
	if opts.Metrics != nil {
		if hopts.MetricsListen == "" {
			mux.Handle("/metrics", limit.wrap(opts.Metrics))
		} else {
			var err error
			if metricsL, err = net.Listen("tcp", hopts.MetricsListen); err != nil {
				return nil, "", fmt.Errorf("listen on %s for metrics: %w", hopts.MetricsListen, err)
			}
			m := http.NewServeMux()
			m.Handle("/metrics", limit.wrap(opts.Metrics))
			metricsSrv = newServer(m, hopts)
		}
	}
	l, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		if metricsL != nil {
			_ = metricsL.Close()
		}
		return nil, "", fmt.Errorf("listen on %s: %w", opts.Listen, err)
	}
	// streams ends the view's event streams when the server shuts down:
	// Shutdown waits for connections to go idle, and a stream never does.
	streams, endStreams := context.WithCancel(context.Background())
	if hopts.View != nil {
		mux.Handle("/", limit.wrap(hopts.View))
		mux.Handle("/events", endWith(streams, hopts.View))
	}
	srv := newServer(mux, hopts)
	srv.RegisterOnShutdown(endStreams)
	if metricsSrv != nil {
		srv.RegisterOnShutdown(func() { _ = metricsSrv.Close() })
		go serve(metricsSrv, metricsL, errs)
	}
	go serve(srv, l, errs)
	return srv, l.Addr().String(), nil
}

// endWith serves h with a request context that also ends with stop.
func endWith(stop context.Context, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer context.AfterFunc(stop, cancel)()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func newServer(h http.Handler, o HTTPOptions) *http.Server {
	return &http.Server{
		Handler: h, ReadHeaderTimeout: o.ReadHeaderTimeout, ReadTimeout: o.ReadTimeout,
		WriteTimeout: o.WriteTimeout, IdleTimeout: o.IdleTimeout, MaxHeaderBytes: o.MaxHeaderBytes,
	}
}

func serve(srv *http.Server, l net.Listener, errs chan<- error) {
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		select {
		case errs <- err:
		default: // the first error already ends the service
		}
	}
}

// inFlightLimit answers 503 when max requests are already being handled:
// waiting would let slow clients pile up goroutines and buffers.
type inFlightLimit struct{ slots chan struct{} }

func newInFlightLimit(max int) inFlightLimit { return inFlightLimit{slots: make(chan struct{}, max)} }

func (l inFlightLimit) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case l.slots <- struct{}{}:
			defer func() { <-l.slots }()
			h.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests in flight", http.StatusServiceUnavailable)
		}
	})
}

package reconcile

import (
	"net/http"
	"net/http/pprof"
)

// mountProfile serves Go's profiles at /debug/pprof/ (HTTPOptions.Profile,
// refit run --pprof): off by default, as they tell whoever can reach the
// address how refit spends its memory and time. A CPU profile is bounded
// by the server's WriteTimeout: ask for fewer seconds than that.
func mountProfile(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

package reconcile

import (
	"net/http"
	"testing"
)

// The profiles are served only when asked for.
func TestProfileOffByDefault(t *testing.T) {
	for _, tc := range []struct {
		name    string
		profile bool
		want    int
	}{
		{"default", false, http.StatusNotFound},
		{"--pprof", true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startHTTP(t, nil, nil, HTTPOptions{Profile: tc.profile})
			if code, _ := get(t, "http://"+addr+"/debug/pprof/heap?debug=1"); code != tc.want {
				t.Errorf("GET /debug/pprof/heap: %d, want %d", code, tc.want)
			}
		})
	}
}

package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startHTTP serves hooks and metrics with hopts and returns the address;
// the server is shut down at the end of the test.
func startHTTP(t *testing.T, hooks, metrics http.Handler, hopts HTTPOptions) string {
	t.Helper()
	var ready atomic.Bool
	ready.Store(true)
	errs := make(chan error, 1)
	srv, addr, err := serveHTTPWith(ServiceOptions{Listen: "127.0.0.1:0", Hooks: hooks, Metrics: metrics}, hopts, &ready, errs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		select {
		case err := <-errs:
			t.Errorf("server error: %v", err)
		default:
		}
	})
	return addr
}

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, s) })
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// closedWithin reads from conn until the server closes it, and fails if
// that takes longer than within.
func closedWithin(t *testing.T, conn net.Conn, within time.Duration, what string) string {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(within))
	data, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection still open after %s", what, within)
	}
	return string(data)
}

func TestHTTPSlowClientsAreCutOff(t *testing.T) {
	hook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	addr := startHTTP(t, hook, nil, HTTPOptions{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	cases := []struct {
		name  string
		send  string // then nothing more
		limit time.Duration
	}{
		{"headers never finished", "POST /hook/app HTTP/1.1\r\nHost: x\r\n", 2 * time.Second},
		{"body trickled", "POST /hook/app HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"a\":", 2 * time.Second},
		{"idle keep-alive", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.send); err != nil {
				t.Fatal(err)
			}
			got := closedWithin(t, conn, tc.limit, tc.name)
			if strings.Contains(got, "202 Accepted") {
				t.Errorf("a request cut off was handled: %q", got)
			}
		})
	}
}

func TestHTTPHeaderLimit(t *testing.T) {
	addr := startHTTP(t, text("hook"), nil, HTTPOptions{MaxHeaderBytes: 4 << 10})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/hook/app", nil)
	req.Header.Set("X-Padding", strings.Repeat("x", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB header: status %d, want 431", resp.StatusCode)
	}
}

// TestHTTPInFlightCap: with every slot held by a request that does not
// finish, the next webhook gets 503 at once while the probes still answer.
func TestHTTPInFlightCap(t *testing.T) {
	const max = 3
	entered, release := make(chan struct{}, max), make(chan struct{})
	hook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hook/slow" {
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusAccepted)
	})
	addr := startHTTP(t, hook, text("metrics"), HTTPOptions{MaxInFlight: max})
	done := make(chan int, max)
	for range max {
		go func() {
			resp, err := http.Post("http://"+addr+"/hook/slow", "application/json", nil)
			if err != nil {
				done <- -1
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	for range max {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the slow hooks did not start")
		}
	}
	start := time.Now()
	resp, err := http.Post("http://"+addr+"/hook/other", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || time.Since(start) > 2*time.Second {
		t.Errorf("hook beyond the cap: status %d Retry-After %q after %s, want 503 at once", resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start))
	}
	if code, _ := get(t, "http://"+addr+"/metrics"); code != http.StatusServiceUnavailable {
		t.Errorf("metrics beyond the cap: status %d, want 503", code)
	}
	for _, probe := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, "http://"+addr+probe); code != http.StatusOK {
			t.Errorf("%s while the hooks are full: status %d, want 200", probe, code)
		}
	}
	close(release)
	for range max {
		if code := <-done; code != http.StatusAccepted {
			t.Errorf("slow hook: status %d, want 202", code)
		}
	}
	resp, err = http.Post("http://"+addr+"/hook/other", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("hook after the slots were freed: status %d, want 202", resp.StatusCode)
	}
}

func TestHTTPMetricsOnTheirOwnAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	addr := startHTTP(t, text("hook"), text("refit_up 1\n"), HTTPOptions{MetricsListen: metricsAddr})
	for _, tc := range []struct {
		url      string
		wantCode int
		wantBody string
	}{
		{"http://" + metricsAddr + "/metrics", http.StatusOK, "refit_up 1"},
		{"http://" + addr + "/metrics", http.StatusNotFound, ""},
		{"http://" + metricsAddr + "/hook/app", http.StatusNotFound, ""},
		{"http://" + addr + "/hook/app", http.StatusOK, "hook"},
	} {
		code, body := get(t, tc.url)
		if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
			t.Errorf("GET %s: %d %q, want %d %q", tc.url, code, body, tc.wantCode, tc.wantBody)
		}
	}
}

// TestHTTPMetricsListenerStopsWithTheServer: shutting the main server
// down closes the metrics listener too, so a restart can bind it again.
func TestHTTPMetricsListenerStopsWithTheServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	var ready atomic.Bool
	srv, _, err := serveHTTPWith(ServiceOptions{Listen: "127.0.0.1:0", Metrics: text("m")}, HTTPOptions{MetricsListen: metricsAddr}, &ready, make(chan error, 1))
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, "http://"+metricsAddr+"/metrics"); code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := net.Listen("tcp", metricsAddr)
		if err == nil {
			l.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics address still bound after shutdown: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHTTPListenErrorsNameTheAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var ready atomic.Bool
	_, _, err = serveHTTPWith(ServiceOptions{Listen: "127.0.0.1:0", Metrics: text("m")}, HTTPOptions{MetricsListen: busy.Addr().String()}, &ready, make(chan error, 1))
	if want := fmt.Sprintf("listen on %s for metrics", busy.Addr()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error = %v, want %q", err, want)
	}
	_, _, err = serveHTTPWith(ServiceOptions{Listen: busy.Addr().String()}, HTTPOptions{}, &ready, make(chan error, 1))
	if want := fmt.Sprintf("listen on %s", busy.Addr()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error = %v, want %q", err, want)
	}
}

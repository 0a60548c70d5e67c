package inplace

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// measured charges each request, and its wait on the rate limit, to the
// rollout on the request's context, and nothing to a context without one.
// The server only answers; what is measured is client-go's own path.
func TestMeasuredCountsRequestsAndRateLimitWait(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns"}}`))
	}))
	defer srv.Close()
	// 20 requests a second, a burst of 1: five requests wait about 200 ms.
	client, err := kubernetes.NewForConfig(measured(&rest.Config{Host: srv.URL, QPS: 20, Burst: 1}))
	if err != nil {
		t.Fatal(err)
	}
	var spent cost
	ctx := withCost(t.Context(), &spent)
	for range 5 {
		if _, err := client.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.CoreV1().Pods("ns").Get(t.Context(), "p", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	requests, wait := spent.read()
	if requests != 5 || wait < 150*time.Millisecond || wait > 2*time.Second {
		t.Errorf("charged %d requests and %s waited, want 5 and about 200ms", requests, wait)
	}
}

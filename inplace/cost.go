package inplace

import (
	"context"
	"net/http"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// cost counts one rollout's requests and the time they waited on the
// client-side rate limit. It travels on the rollout's context, so the
// engine's shared clients charge each request to the rollout that made it.
// The Pod informer's list and watch run on a context of their own and are
// not counted (two requests per rollout).
type cost struct {
	mu       sync.Mutex
	requests int
	wait     time.Duration
}

type costKey struct{}

func withCost(ctx context.Context, c *cost) context.Context {
	return context.WithValue(ctx, costKey{}, c)
}

func costOf(ctx context.Context) *cost {
	c, _ := ctx.Value(costKey{}).(*cost)
	return c
}

func (c *cost) add(requests int, wait time.Duration) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.requests += requests
	c.wait += wait
	c.mu.Unlock()
}

func (c *cost) read() (int, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests, c.wait
}

// countingTransport charges every request to the rollout on its context.
type countingTransport struct{ next http.RoundTripper }

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	costOf(req.Context()).add(1, 0)
	return t.next.RoundTrip(req)
}

// timedLimiter charges the time a request waits for a token to the rollout
// on its context: client-go calls Wait with the request's context.
type timedLimiter struct {
	flowcontrol.RateLimiter
}

func (l timedLimiter) Wait(ctx context.Context) error {
	start := time.Now()
	err := l.RateLimiter.Wait(ctx)
	costOf(ctx).add(0, time.Since(start))
	return err
}

// measured returns a copy of cfg whose requests are counted and whose rate
// limit waits are timed per rollout. The limiter it builds from QPS and
// Burst (as client-go would) is shared by the engine's typed and dynamic
// clients, so --qps bounds the engine as a whole.
func measured(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt} })
	limiter := cfg.RateLimiter
	if limiter == nil && cfg.QPS >= 0 {
		qps, burst := cfg.QPS, cfg.Burst
		if qps == 0 {
			qps = rest.DefaultQPS
		}
		if burst == 0 {
			burst = rest.DefaultBurst
		}
		limiter = flowcontrol.NewTokenBucketRateLimiter(qps, burst)
	}
	if limiter != nil {
		cfg.RateLimiter = timedLimiter{limiter}
	}
	return cfg
}

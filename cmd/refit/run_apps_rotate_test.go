package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/source"
)

func TestRecheckDelay(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, 0}, {1, 5 * time.Second}, {2, 10 * time.Second}, {3, 20 * time.Second}, {4, 40 * time.Second},
		{5, 80 * time.Second}, {6, 160 * time.Second}, {7, 5 * time.Minute}, {8, 5 * time.Minute}, {1000, 5 * time.Minute},
	} {
		if got := recheckDelay(tc.n); got != tc.want {
			t.Errorf("recheckDelay(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}

func TestCredentialsRefused(t *testing.T) {
	kind := func(k error) error {
		return &source.Error{URL: "https://git.example.com/x.git", Op: "list refs", Kind: k}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"credentials refused", kind(source.ErrAuth), true},
		{"host key refused", kind(source.ErrHostKey), true},
		{"wrapped", fmt.Errorf("app x: %w", kind(source.ErrAuth)), true},
		{"repository gone", kind(source.ErrNotFound), false},
		{"host unreachable", kind(source.ErrTransport), false},
		{"timed out", kind(source.ErrTimeout), false},
		{"no error", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := credentialsRefused(tc.err); got != tc.want {
				t.Errorf("credentialsRefused = %v, want %v", got, tc.want)
			}
		})
	}
}

// Every credential counts, and nothing else does; a read that failed
// ("") never restarts.
func TestCredentialsChanged(t *testing.T) {
	base := source.Options{URL: "https://git.example.com/x.git", Auth: source.Auth{Username: "bot", Password: "p1"}}
	with := func(f func(o *source.Options)) source.Options {
		o := base
		f(&o)
		return o
	}
	keys, err := source.ParseKeys(source.KeySource{Name: "k", Data: []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0MqnYFYGCLn6oQcr7D2CLWJOmqTtF93sfpv7O5Dkdo a@b")})
	if err != nil {
		t.Fatal(err)
	}
	running := base.CredentialsDigest()
	for _, tc := range []struct {
		name string
		read string
		want bool
	}{
		{"same credentials", with(func(*source.Options) {}).CredentialsDigest(), false},
		{"another timeout or cache: not a credential", with(func(o *source.Options) { o.Timeout, o.CacheDir = time.Hour, "/c" }).CredentialsDigest(), false},
		{"password rotated", with(func(o *source.Options) { o.Auth.Password = "p2" }).CredentialsDigest(), true},
		{"username changed", with(func(o *source.Options) { o.Auth.Username = "bot2" }).CredentialsDigest(), true},
		{"bearer token added", with(func(o *source.Options) { o.Auth.BearerToken = "t" }).CredentialsDigest(), true},
		{"fields shifted", with(func(o *source.Options) { o.Auth.Username, o.Auth.Password = "botp", "1" }).CredentialsDigest(), true},
		{"SSH key", with(func(o *source.Options) { o.Auth.SSHPrivateKey = []byte("key") }).CredentialsDigest(), true},
		{"known_hosts", with(func(o *source.Options) { o.Auth.KnownHosts = []byte("host ssh-ed25519 AAAA") }).CredentialsDigest(), true},
		{"verification keys", with(func(o *source.Options) { o.Verify = keys }).CredentialsDigest(), true},
		{"not read", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := credentialsChanged(running, tc.read); got != tc.want {
				t.Errorf("credentialsChanged = %v, want %v", got, tc.want)
			}
		})
	}
}

// recheckBed is a credsRecheck reading a fake cluster's Secret, with a
// clock the test moves: each wait it asks for arrives on waits, and the
// test ends it by sending on fire (the recheck reads the Secret through
// the App's wiring, as in a run).
type recheckBed struct {
	client   *fake.Clientset
	w        *credsRecheck
	waits    chan time.Duration
	fire     chan time.Time
	restarts chan struct{}
}

func newRecheckBed(t *testing.T, password string) *recheckBed {
	t.Helper()
	client := fake.NewClientset(gitSecret(password))
	a := config.App{Name: "shop", AppNamespace: "team-a", Namespace: "shop",
		Source: config.Source{URL: "https://git.example.com/shop.git", SecretRef: &config.SecretRef{Name: "git"}}}
	a.Defaults()
	aw := (&appWiring{client: client, secretsNS: "refit-system", cacheDir: t.TempDir()}).forApp(a)
	running, err := credentialsReader(aw, a)(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	client.ClearActions()
	b := &recheckBed{client: client, waits: make(chan time.Duration, 16), fire: make(chan time.Time), restarts: make(chan struct{}, 1)}
	b.w = &credsRecheck{loopCtx: t.Context(), app: "team-a/shop", running: running, read: credentialsReader(aw, a),
		restart: func() { b.restarts <- struct{}{} },
		after: func(d time.Duration) <-chan time.Time {
			b.waits <- d
			return b.fire
		}}
	t.Cleanup(b.w.stop)
	return b
}

func gitSecret(password string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: "team-a"},
		Data: map[string][]byte{"username": []byte("bot"), "password": []byte(password)}}
}

// reads counts the Secret GETs so far.
func (b *recheckBed) reads() int {
	n := 0
	for _, a := range b.client.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "secrets" {
			n++
		}
	}
	return n
}

// next expects the recheck to ask to wait d, having read reads times.
func (b *recheckBed) next(t *testing.T, d time.Duration, reads int) {
	t.Helper()
	select {
	case got := <-b.waits:
		if got != d {
			t.Fatalf("recheck waits %s, want %s", got, d)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("recheck asked for no wait; want %s", d)
	}
	if got := b.reads(); got != reads {
		t.Fatalf("Secret read %d times before the wait of %s, want %d", got, d, reads)
	}
}

func refusal(kind error) reconcile.Pass {
	return reconcile.Pass{Phase: reconcile.PhaseGitFailed, Message: "refused",
		Err: &source.Error{URL: "https://git.example.com/shop.git", Op: "list refs", Kind: kind}}
}

// A refusal reads the Secret at once, then on the backoff; unchanged
// credentials restart nothing; the rotated ones restart the loop once,
// and the recheck ends there.
func TestRecheckRestartsOnRotation(t *testing.T) {
	for _, kind := range []error{source.ErrAuth, source.ErrHostKey} {
		t.Run(kind.Error(), func(t *testing.T) {
			b := newRecheckBed(t, "p1")
			b.w.observe(refusal(kind))
			b.next(t, 5*time.Second, 1) // read at once
			b.w.observe(refusal(kind))  // heard again: the schedule goes on
			b.fire <- time.Time{}
			b.next(t, 10*time.Second, 2)
			b.fire <- time.Time{}
			b.next(t, 20*time.Second, 3)
			select {
			case <-b.restarts:
				t.Fatal("restarted with unchanged credentials")
			default:
			}
			if _, err := b.client.CoreV1().Secrets("team-a").Update(t.Context(), gitSecret("p2"), metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			b.fire <- time.Time{}
			select {
			case <-b.restarts:
			case <-time.After(5 * time.Second):
				t.Fatal("rotated credentials: no restart")
			}
			b.w.stop()
			if got := b.reads(); got != 4 {
				t.Errorf("Secret read %d times, want 4", got)
			}
			select {
			case d := <-b.waits:
				t.Errorf("recheck waits %s after its restart, want it ended", d)
			default:
			}
		})
	}
}

// Failures credentials cannot mend read nothing; a good poll (any other
// pass) or the loop's end stops a recheck under way.
func TestRecheckOnlyWhileRefused(t *testing.T) {
	t.Run("host unreachable", func(t *testing.T) {
		b := newRecheckBed(t, "p1")
		b.w.observe(refusal(source.ErrTransport))
		b.w.observe(reconcile.Pass{Phase: reconcile.PhaseSuccess})
		b.w.stop()
		if got := b.reads(); got != 0 {
			t.Errorf("Secret read %d times, want 0", got)
		}
	})
	for _, tc := range []struct {
		name string
		then reconcile.Pass
	}{
		{"polls succeed again", reconcile.Pass{Phase: reconcile.PhaseSuccess}},
		{"a new commit syncs", reconcile.Pass{Phase: reconcile.PhaseProgressing}},
		{"another failure", refusal(source.ErrNotFound)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newRecheckBed(t, "p1")
			b.w.observe(refusal(source.ErrAuth))
			b.next(t, 5*time.Second, 1)
			b.w.observe(tc.then) // returns once the recheck has ended
			if b.w.cancel != nil {
				t.Error("recheck still runs")
			}
			if got := b.reads(); got != 1 {
				t.Errorf("Secret read %d times, want 1", got)
			}
		})
	}
	t.Run("the loop ends", func(t *testing.T) {
		b := newRecheckBed(t, "p1")
		ctx, cancel := context.WithCancel(t.Context())
		b.w.loopCtx = ctx
		b.w.observe(refusal(source.ErrAuth))
		b.next(t, 5*time.Second, 1)
		cancel()
		b.w.stop()
		if b.w.cancel != nil {
			t.Error("recheck still runs")
		}
	})
}

// A Secret that cannot be read is retried on the schedule, and its error
// carries no credential.
func TestRecheckUnreadableSecret(t *testing.T) {
	b := newRecheckBed(t, "p1")
	if err := b.client.CoreV1().Secrets("team-a").Delete(t.Context(), "git", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := b.w.read(t.Context())
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("read of a deleted Secret: %v", err)
	}
	b.client.ClearActions()
	b.w.observe(refusal(source.ErrAuth))
	b.next(t, 5*time.Second, 1)
	b.fire <- time.Time{}
	b.next(t, 10*time.Second, 2)
	select {
	case <-b.restarts:
		t.Fatal("restarted without credentials read")
	default:
	}
}

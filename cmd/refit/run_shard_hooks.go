package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/source"
)

// pollAtAnnotation: a new value asks the replica running the App to poll
// its repository now, as a webhook delivered to it would. Unlike
// reconcile-at it neither restarts the App's loop (a sync in progress
// goes on) nor forces a pass when the commit has not moved. A replica
// that does not run the App sets it on a verified delivery.
const pollAtAnnotation = "refit.dev/poll-at"

// pollAsked says whether the poll-at value now is a request not yet
// handled (handled: the value when the loop started or last polled).
func pollAsked(handled, now string) bool {
	return now != "" && now != handled
}

// pollIfAsked wakes the poller of the running App key when its poll-at
// annotation is new.
func (c *appController) pollIfAsked(ctx context.Context, key string, obj *v1alpha1.App) {
	now := obj.Annotations[pollAtAnnotation]
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.running[key]
	if r == nil || !pollAsked(r.pollAt, now) {
		return
	}
	r.pollAt = now
	if r.wake != nil {
		r.wake.Fire()
		logr.FromContextOrDiscard(ctx).Info("poll asked by another replica", "app", key, "pollAt", now)
	}
}

// hookRoute is where a delivery to /hook/<namespace>/<name> goes on a
// sharded replica.
type hookRoute int

const (
	// routeLocal: the Receiver of the Apps this replica runs (it wakes the
	// App's poller, or answers 404 for a path it does not serve).
	routeLocal hookRoute = iota
	// routeRemote: another replica runs the App: verify here and ask the
	// owner to poll (poll-at).
	routeRemote
)

// routeHook decides where a delivery for obj (nil: no such App) goes.
// Only an App the owner would serve a hook for is answered for it: one
// with a webhook, not suspended, not being deleted; any other is the local
// Receiver's, which says 404 as the owner would.
func routeHook(obj *v1alpha1.App, owned bool) hookRoute {
	switch {
	case owned, obj == nil, obj.Spec.Webhook == nil, obj.Spec.Suspend, obj.DeletionTimestamp != nil:
		return routeLocal
	default:
		return routeRemote
	}
}

// remoteAnswer is the status a non-owner answers, given what the
// verifying Receiver answered (202: signed, for the App's repository) and
// whether the owner was asked to poll (annotate: the patch's error). Only
// a 202 writes anything; a refused delivery is answered as is.
func remoteAnswer(verified int, annotate func() error) (int, string) {
	if verified != http.StatusAccepted {
		return verified, ""
	}
	if err := annotate(); err != nil {
		// The sender retries (GitHub, Gitea, GitLab show it as failed).
		return http.StatusServiceUnavailable, "poll not requested"
	}
	return http.StatusAccepted, "poll requested from the owner"
}

// appKeyOfPath is the App key of an App object's hook path
// (/hook/<namespace>/<name>); false for any other path.
func appKeyOfPath(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/hook/")
	if !ok {
		return "", false
	}
	ns, name, ok := strings.Cut(rest, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return ns + "/" + name, true
}

// shardHooks serves, on a sharded replica, the webhooks of every App: the
// ones it runs through the local Receiver, the others by verifying the
// delivery with the App's secret and setting the App's poll-at
// annotation, which the owner's watch turns into a poll at once. The
// secrets of Apps run elsewhere are read at their first delivery, never
// at start: a replica knows every App (the informer) but reads only the
// Secrets it needs.
type shardHooks struct {
	c     *appController
	local http.Handler
	// remote verifies deliveries for Apps run elsewhere: one hook per App
	// delivered to, its Trigger a sink (the answer is the signal).
	remote *source.Receiver
	now    func() time.Time

	mu    sync.Mutex
	log   logr.Logger
	apps  cache.Indexer          // the controller's informer (nil until synced)
	known map[string]remoteEntry // App key: the spec its hook was made from
}

// remoteEntry is what a remote hook was made from: a new generation (the
// webhook's provider, secret or repository may have changed) or a new App
// of the same name makes it again.
type remoteEntry struct {
	uid types.UID
	gen int64
	// err: the hook could not be made (at: when it was last tried).
	err error
	at  time.Time
}

var _ http.Handler = (*shardHooks)(nil)

func newShardHooks(c *appController, local http.Handler) (*shardHooks, error) {
	recv, err := source.NewReceiver(source.DefaultReceiverOptions())
	if err != nil {
		return nil, err
	}
	return &shardHooks{c: c, local: local, remote: recv, now: time.Now, log: logr.Discard(), known: map[string]remoteEntry{}}, nil
}

// watch gives the handler the controller's informer, once synced, and
// its logger.
func (h *shardHooks) watch(ctx context.Context, idx cache.Indexer) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.apps, h.log = idx, logr.FromContextOrDiscard(ctx)
}

// forget drops the hook of an App gone (or now run here).
func (h *shardHooks) forget(key string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	_, ok := h.known[key]
	delete(h.known, key)
	h.mu.Unlock()
	if ok {
		_ = h.remote.Set(key) // removing cannot fail
	}
}

func (h *shardHooks) lookup(key string) (*v1alpha1.App, logr.Logger) {
	h.mu.Lock()
	idx, log := h.apps, h.log
	h.mu.Unlock()
	if idx == nil {
		return nil, log
	}
	item, exists, err := idx.GetByKey(key)
	if err != nil || !exists {
		return nil, log
	}
	obj, err := appOf(item)
	if err != nil {
		return nil, log
	}
	return obj, log.WithValues("app", key)
}

func (h *shardHooks) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	key, ok := appKeyOfPath(req.URL.Path)
	if !ok {
		h.local.ServeHTTP(w, req)
		return
	}
	obj, log := h.lookup(key)
	if routeHook(obj, h.c.owns(key)) == routeLocal {
		h.forget(key)
		h.local.ServeHTTP(w, req)
		return
	}
	if err := h.ensure(req.Context(), key, obj); err != nil {
		log.Error(err, "webhook of an App run by another replica not checked")
		http.Error(w, "webhook secret not readable", http.StatusServiceUnavailable)
		return
	}
	rec := &bufferedResponse{header: http.Header{}}
	h.remote.ServeHTTP(rec, req)
	status, msg := remoteAnswer(rec.status(), func() error {
		err := h.annotate(req.Context(), obj)
		if err != nil {
			log.Error(err, "webhook: owner not asked to poll")
		} else {
			log.Info("webhook: owner asked to poll")
		}
		return err
	})
	if msg == "" {
		rec.flush(w)
		return
	}
	http.Error(w, msg, status)
}

// ensure sets the remote hook of obj unless it is set for this spec. The
// secret is read as the App's ServiceAccount, as its owner reads it; a
// rotated one is read again at its first delivery (Hook.Reload).
func (h *shardHooks) ensure(ctx context.Context, key string, obj *v1alpha1.App) error {
	want := remoteEntry{uid: obj.UID, gen: obj.Generation}
	now := h.now()
	h.mu.Lock()
	have, ok := h.known[key]
	if ok && have.uid == want.uid && have.gen == want.gen {
		if have.err == nil || now.Sub(have.at) < retrySecretEvery {
			h.mu.Unlock()
			return have.err
		}
	}
	h.mu.Unlock()
	err := h.set(ctx, key, obj)
	want.err, want.at = err, now
	h.mu.Lock()
	h.known[key] = want
	h.mu.Unlock()
	return err
}

// retrySecretEvery is the least time between two reads of a Secret that
// could not be read (or made no valid hook): a flood of deliveries for an
// App whose Secret is missing reads it at most this often.
const retrySecretEvery = 10 * time.Second

func (h *shardHooks) set(ctx context.Context, key string, obj *v1alpha1.App) error {
	a, err := config.FromObject(obj, config.ObjectOptions{LocalFiles: h.c.allowLocal})
	if err != nil {
		return fmt.Errorf("app %s: %w", key, err)
	}
	aw := h.c.wiring.forApp(a)
	secret, err := aw.secret(ctx, a.Webhook.SecretSecretRef, a.Webhook.SecretFile, "secret")
	if err != nil {
		return fmt.Errorf("app %s: webhook: %w", key, err)
	}
	hook := source.Hook{Path: hookPath(a, true), Provider: source.Provider(a.Webhook.Provider), Secret: secret,
		RepoURL: a.Source.URL, Trigger: source.NewTrigger(), Reload: aw.hookSecret(a)}
	if err := h.remote.Set(key, hook); err != nil {
		return fmt.Errorf("app %s: %w", key, err)
	}
	return nil
}

// annotate asks the App's owner to poll now (poll-at). Not reconcile-at:
// that restarts the loop, cancelling a sync in progress, and its first
// pass takes the repository's last polled revision without polling.
func (h *shardHooks) annotate(ctx context.Context, obj *v1alpha1.App) error {
	at := h.now().UTC().Format(time.RFC3339Nano)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{pollAtAnnotation: at}}})
	if err != nil {
		return err
	}
	if _, err := h.c.dyn.Resource(appsGVR).Namespace(obj.Namespace).Patch(ctx, obj.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("app %s/%s: poll-at: %w", obj.Namespace, obj.Name, err)
	}
	return nil
}

// bufferedResponse holds the verifying Receiver's answer until it is
// known whether the owner was asked.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedResponse) status() int {
	if b.code == 0 {
		return http.StatusOK
	}
	return b.code
}

func (b *bufferedResponse) flush(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.WriteHeader(b.status())
	_, _ = w.Write(b.body.Bytes())
}

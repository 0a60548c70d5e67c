package inplace

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// busyPods are the Pods that a rollout of this Engine is taking through an
// update right now: their readiness gate is False on purpose (draining,
// patched, restarting). Anything that opens gates leaves them alone.
type busyPods struct {
	mu   sync.Mutex
	pods map[types.UID]int
}

func newBusyPods() *busyPods { return &busyPods{pods: map[types.UID]int{}} }

func (b *busyPods) add(uid types.UID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pods[uid]++
}

func (b *busyPods) remove(uid types.UID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pods[uid] <= 1 {
		delete(b.pods, uid)
		return
	}
	b.pods[uid]--
}

func (b *busyPods) has(uid types.UID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pods[uid] > 0
}

// Busy reports whether a rollout of this Engine is updating the Pod now, so
// its readiness gate is False on purpose.
func (e *Engine) Busy(uid types.UID) bool { return e.busy.has(uid) }

package apply

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Memory is an app's bad-commit memory: what refit must not retry after a
// restart. It lives in the app's inventory ConfigMap, so it is where the
// inventory is (the app's namespace under an impersonated identity) and,
// like it, never comes from Git.
type Memory struct {
	// Attempt is the commit refit started to apply and has not finished
	// with; Attempts counts the starts. A commit that crashes refit (or
	// gets it OOM-killed) mid-apply is left here at every restart.
	Attempt  string
	Attempts int
	// Bad is the last commit found bad, Reason why, and Outcome the kind
	// of failure (the caller's word for it).
	Bad, Reason, Outcome string
}

// memoryManager writes the memory's keys of the inventory ConfigMap: a
// field manager of its own, so that an inventory write (manager refit)
// never drops them and a memory write never drops the entries.
const memoryManager = "refit-memory"

const (
	memoryAttempt  = "attempt"
	memoryAttempts = "attempts"
	memoryBad      = "bad-commit"
	memoryReason   = "bad-reason"
	memoryOutcome  = "bad-outcome"
	// maxReason bounds the reason kept: an error naming every refused
	// object of a large commit is long, and a ConfigMap holds 1 MiB.
	maxReason = 2048
)

// Memory returns app's bad-commit memory (empty if there is none yet).
func (a *Applier) Memory(ctx context.Context, app string) (Memory, error) {
	if err := checkApp(app); err != nil {
		return Memory{}, err
	}
	cm := &corev1.ConfigMap{}
	err := a.client.Get(ctx, client.ObjectKey{Namespace: a.inventoryNamespace, Name: InventoryName(app)}, cm)
	if apierrors.IsNotFound(err) {
		return Memory{}, nil
	}
	if err != nil {
		return Memory{}, fmt.Errorf("memory %s/%s: %w", a.inventoryNamespace, InventoryName(app), err)
	}
	if err := ownInventory(cm, app); err != nil {
		return Memory{}, fmt.Errorf("memory %s/%s: %w", a.inventoryNamespace, InventoryName(app), err)
	}
	return decodeMemory(cm.Data), nil
}

// SaveMemory stores app's bad-commit memory.
func (a *Applier) SaveMemory(ctx context.Context, app string, m Memory) error {
	if err := checkApp(app); err != nil {
		return err
	}
	cm := a.stateObject(app)
	data := map[string]any{inventoryApp: app}
	for k, v := range encodeMemory(m) {
		data[k] = v
	}
	cm.Object["data"] = data
	if _, err := a.writeState(ctx, cm, memoryManager); err != nil {
		return fmt.Errorf("memory %s/%s: %w", a.inventoryNamespace, InventoryName(app), err)
	}
	return nil
}

// encodeMemory leaves out empty fields: with server-side apply, a key the
// manager no longer sends is removed.
func encodeMemory(m Memory) map[string]string {
	out := map[string]string{}
	if m.Attempt != "" {
		out[memoryAttempt] = m.Attempt
		out[memoryAttempts] = strconv.Itoa(m.Attempts)
	}
	if m.Bad != "" {
		out[memoryBad] = m.Bad
		reason := m.Reason
		if len(reason) > maxReason {
			reason = reason[:maxReason] + "…"
		}
		out[memoryReason] = reason
		if m.Outcome != "" {
			out[memoryOutcome] = m.Outcome
		}
	}
	return out
}

func decodeMemory(data map[string]string) Memory {
	m := Memory{Attempt: data[memoryAttempt], Bad: data[memoryBad], Reason: data[memoryReason], Outcome: data[memoryOutcome]}
	if m.Attempt != "" {
		// An unreadable count is one start: the memory errs on retrying.
		n, err := strconv.Atoi(data[memoryAttempts])
		m.Attempts = max(n, 1)
		if err != nil {
			m.Attempts = 1
		}
	}
	return m
}

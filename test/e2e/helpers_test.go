//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
)

// namespace creates a namespace for one test and deletes it afterwards.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(fmt.Sprintf("%.40s-%s", strings.ReplaceAll(t.Name(), "/", "-"), rand.String(5)))
	ctx := context.Background()
	_, err := bed.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = bed.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	// Pods are refused until the service account controller has made the
	// namespace's default ServiceAccount.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := bed.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s: no default ServiceAccount: %v", name, err)
	}
	return name
}

// waitPod polls a Pod until cond holds, failing with the last state seen.
func waitPod(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pod, err := bed.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = pod
		return cond(pod), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s: want %s within %s; last seen: %s", ns, name, what, timeout, describePod(last))
	}
	return last
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == name {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

func describePod(pod *corev1.Pod) string {
	if pod == nil {
		return "no pod"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s node=%s ready=%v", pod.Status.Phase, pod.Spec.NodeName, podReady(pod))
	for _, c := range pod.Status.ContainerStatuses {
		state := "running"
		switch {
		case c.State.Waiting != nil:
			state = "waiting:" + c.State.Waiting.Reason
		case c.State.Terminated != nil:
			state = "terminated:" + c.State.Terminated.Reason
		case c.State.Running == nil:
			state = "unknown"
		}
		fmt.Fprintf(&b, " [%s image=%s ready=%v restarts=%d %s]", c.Name, c.Image, c.Ready, c.RestartCount, state)
	}
	for _, c := range pod.Status.Conditions {
		fmt.Fprintf(&b, " %s=%s", c.Type, c.Status)
	}
	return b.String()
}

// resourceOf maps the few kinds the tests write directly to their resource.
func resourceOf(kind string) (schema.GroupVersionResource, bool) {
	switch kind {
	case "Deployment", "StatefulSet", "DaemonSet":
		return schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: strings.ToLower(kind) + "s"}, true
	case "ConfigMap":
		return schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, true
	case "Namespace":
		return schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, false
	}
	panic("resourceOf: unexpected kind " + kind)
}

// addNodes creates kwok nodes of the test's own, removes them when it ends,
// and waits until each is Ready. It returns their names.
func addNodes(t *testing.T, nodes ...*corev1.Node) []string {
	t.Helper()
	var names []string
	for _, node := range nodes {
		if _, err := bed.Client.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node %s: %v", node.Name, err)
		}
		names = append(names, node.Name)
		t.Cleanup(func() {
			_ = bed.Client.CoreV1().Nodes().Delete(context.Background(), node.Name, metav1.DeleteOptions{})
		})
	}
	waitUntil(t, time.Minute, fmt.Sprintf("nodes %v Ready", names), func(ctx context.Context) (bool, string) {
		for _, name := range names {
			n, err := bed.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if !nodeReady(n) {
				return false, name + " not Ready"
			}
		}
		return true, ""
	})
	return names
}

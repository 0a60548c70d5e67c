package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/test/toolcache"
)

// HollowTaint keeps ordinary Pods off hollow kubelets: a test that wants
// real kubelet behaviour tolerates it and selects the node by name.
const HollowTaint = "refit.dev/hollow"

// AddHollowNode joins a real kubelet (kubemark's hollow node: the kubelet's
// own code on a fake container runtime) to the cluster as node name, tainted
// with HollowTaint=true:NoSchedule, and waits for it to be Ready. Stop ends it.
func (c *Cluster) AddHollowNode(ctx context.Context, name string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	logPath := filepath.Join(c.stateDir, "hollow-"+name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(c.Tools.Kubemark,
		"--morph=kubelet",
		"--name="+name,
		"--kubeconfig="+c.Kubeconfig,
		"--kubelet-port="+strconv.Itoa(port),
		"--kubelet-read-only-port=0",
		"--use-host-image-service=false",
		"--node-labels="+NodeTypeLabel+"=hollow",
		"--register-with-taints="+HollowTaint+"=true:NoSchedule",
		"--max-pods=110",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so Stop can end it and anything it started,
	// and a Ctrl-C in the terminal does not kill it before Stop runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("hollow node %s: start kubemark: %w", name, err)
	}
	pidPath := filepath.Join(c.stateDir, "hollow-"+name+".pid")
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.Now().Add(90 * time.Second)
	for {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, cond := range node.Status.Conditions {
				if cond.Type == "Ready" && cond.Status == "True" {
					return nil
				}
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("hollow node %s: kubemark exited (%v) before the node was Ready; log: %s\n%s", name, err, logPath, tail(logPath))
		case <-ctx.Done():
			return fmt.Errorf("hollow node %s: %w", name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hollow node %s: not Ready after 90s; log: %s\n%s", name, logPath, tail(logPath))
		}
	}
}

// stopHollowNodes ends every kubemark process recorded in stateDir.
func stopHollowNodes(stateDir string) {
	pids, _ := filepath.Glob(filepath.Join(stateDir, "hollow-*.pid"))
	for _, path := range pids {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		for i := 0; i < 50 && processAlive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = os.Remove(path)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("find a free port: not a TCP address")
	}
	return addr.Port, nil
}

func tail(path string) string {
	data, _ := os.ReadFile(path)
	return toolcache.LastLines(string(data), 15)
}

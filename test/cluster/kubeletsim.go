package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/refit-gitops/refit/test/toolcache"
)

// The kubelet simulator (test/cmd/refit-kubeletsim) does what per-Pod
// Stages cannot: image pulls once per node with status.images, and
// pods/resize against the node's allocatable. It is built from this module
// into the tools cache (once per version of its sources) and runs beside
// kwok, recorded by a pid file and ended by Stop like the hollow kubelets.
const (
	kubeletSimPackage = "github.com/refit-gitops/refit/test/cmd/refit-kubeletsim"
	kubeletSimBinary  = "refit-kubeletsim"
	kubeletSimPID     = "kubeletsim.pid"
	kubeletSimArgs    = "kubeletsim.args"
)

// moduleDir is the root of the refit module this package was built from;
// the simulator is built from the same sources.
func moduleDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if ok {
		dir := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
	}
	// Built with -trimpath: the working directory is inside the module.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find the refit module to build %s: %w", kubeletSimBinary, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// kubeletSimSources are the files the simulator is built from, relative to
// the module root; their hash keys the cached binary.
var kubeletSimSources = []string{"go.mod", "go.sum", "test/cluster/kubeletsim/*.go", "test/cmd/refit-kubeletsim/*.go"}

// buildKubeletSim builds the simulator into the tools cache, under a folder
// named for the hash of its sources: linking it takes seconds of CPU that a
// cluster start should not pay again, and checkouts with other sources
// (worktrees, branches) get their own binary.
func (c *Cluster) buildKubeletSim(ctx context.Context) error {
	dir, err := moduleDir()
	if err != nil {
		return err
	}
	sum, err := sourcesHash(dir, kubeletSimSources)
	if err != nil {
		return err
	}
	binDir := filepath.Join(c.opts.CacheDir, "tools", kubeletSimBinary+"-"+sum)
	c.kubeletSim = filepath.Join(binDir, kubeletSimBinary)
	if _, err := os.Stat(c.kubeletSim); err == nil {
		return nil
	}
	unlock, err := toolcache.Lock(ctx, binDir+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(c.kubeletSim); err == nil {
		return nil // built by another process while we waited
	}
	tmp := c.kubeletSim + ".partial"
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, kubeletSimPackage)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build %s: %w\n%s", kubeletSimBinary, err, toolcache.LastLines(string(out), 20))
	}
	return os.Rename(tmp, c.kubeletSim)
}

// sourcesHash is a short hash of the files matching patterns under dir.
func sourcesHash(dir string, patterns []string) (string, error) {
	h := sha256.New()
	for _, pattern := range patterns {
		files, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil || len(files) == 0 {
			return "", fmt.Errorf("%s: no files match %s", dir, pattern)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(strings.TrimPrefix(f, dir)), len(data))
			h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (c *Cluster) kubeletSimArgs() []string {
	return []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--pull-delay=" + c.opts.PullDelay.String(),
		"--bad-image=" + c.opts.BadImagePattern,
	}
}

// ensureKubeletSim keeps a running simulator of the same binary and
// options (a cluster reused by `refit-cluster up`), or starts one; built
// says the binary is already built.
func (c *Cluster) ensureKubeletSim(ctx context.Context, built bool) error {
	if !built || c.kubeletSim == "" {
		if err := c.buildKubeletSim(ctx); err != nil {
			return err
		}
	}
	args := c.kubeletSimArgs()
	record := strings.Join(append([]string{c.kubeletSim}, args...), "\n")
	if pid := readPID(filepath.Join(c.stateDir, kubeletSimPID)); processAlive(pid) {
		old, _ := os.ReadFile(filepath.Join(c.stateDir, kubeletSimArgs))
		if string(old) == record {
			return nil
		}
		fmt.Fprintf(c.opts.Log, "restarting %s: new options or sources\n", kubeletSimBinary)
	}
	stopPIDFile(filepath.Join(c.stateDir, kubeletSimPID))
	logFile, err := os.OpenFile(filepath.Join(c.stateDir, "kubeletsim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(c.kubeletSim, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, as the hollow kubelets: it outlives
	// `refit-cluster up` and a Ctrl-C does not end it before Stop runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", kubeletSimBinary, err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reaped when it ends, so Stop sees it gone
	if err := os.WriteFile(filepath.Join(c.stateDir, kubeletSimPID), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return err
	}
	return os.WriteFile(filepath.Join(c.stateDir, kubeletSimArgs), []byte(record), 0o644)
}

func readPID(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// stopPIDFile ends the process group recorded in path: SIGTERM, then
// SIGKILL after 5 s.
func stopPIDFile(path string) {
	pid := readPID(path)
	if pid <= 0 {
		_ = os.Remove(path)
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	for i := 0; i < 50 && processAlive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = os.Remove(path)
}

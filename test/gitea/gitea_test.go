package gitea

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/refit-gitops/refit/test/toolcache"
)

func TestAppINI(t *testing.T) {
	cases := []struct {
		name    string
		root    bool
		want    []string
		notWant []string
	}{
		{
			name: "root may run",
			root: true,
			want: []string{"RUN_USER = root\n", "I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\n"},
		},
		{
			name:    "other users need no override",
			notWant: []string{"I_AM_BEING_UNSAFE_RUNNING_AS_ROOT"},
		},
	}
	common := []string{
		"[server]\n", "HTTP_ADDR = 127.0.0.1\n", "HTTP_PORT = 3123\n", "ROOT_URL = http://127.0.0.1:3123/\n",
		"STATIC_ROOT_PATH = /cache/static\n", "OFFLINE_MODE = true\n",
		"DB_TYPE = sqlite3\n", "PATH = /run/data/gitea.db\n",
		"INSTALL_LOCK = true\n", "SECRET_KEY = sk\n", "INTERNAL_TOKEN = it\n",
		"[webhook]\nALLOWED_HOST_LIST = loopback\nSKIP_TLS_VERIFY = true\n",
		"[mailer]\nENABLED = false\n", "[cron.update_checker]\nENABLED = false\n",
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user := "refit"
			if tc.root {
				user = "root"
			}
			got := appINI(iniParams{RunUser: user, Root: tc.root, Dir: "/run", StaticDir: "/cache/static", Port: 3123, SecretKey: "sk", InternalToken: "it"})
			for _, w := range append(common, tc.want...) {
				if !strings.Contains(got, w) {
					t.Errorf("app.ini lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("app.ini has %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestWrapperGoMod(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain")
	}
	cases := []struct {
		name     string
		upstream string
		want     []string
		wantErr  string
	}{
		{
			name: "single-line and block replaces, excludes",
			upstream: `module code.gitea.io/gitea

go 1.26.2

require github.com/jaytaylor/html2text v0.0.0-20230321000545-74c2419ad056

replace github.com/jaytaylor/html2text => github.com/Necoro/html2text v0.0.0-20250804200300-7bf1ce1c7347 // unmaintained

replace (
	github.com/urfave/cli/v3 => github.com/urfave/cli/v3 v3.4.1
	example.com/pinned v1.2.0 => example.com/fork v1.2.1
)

exclude example.com/bad v0.1.0
`,
			want: []string{
				"module refit.local/gitea-tools\n", "go 1.26.2\n", "require code.gitea.io/gitea " + Version + "\n",
				"\tgithub.com/jaytaylor/html2text => github.com/Necoro/html2text v0.0.0-20250804200300-7bf1ce1c7347\n",
				"\tgithub.com/urfave/cli/v3 => github.com/urfave/cli/v3 v3.4.1\n",
				"\texample.com/pinned v1.2.0 => example.com/fork v1.2.1\n",
				"exclude example.com/bad v0.1.0\n",
			},
		},
		{
			name:     "a folder replace cannot be copied",
			upstream: "module code.gitea.io/gitea\n\ngo 1.26.2\n\nreplace example.com/x => ./x\n",
			wantErr:  "replaces example.com/x with the folder ./x",
		},
		{
			name:     "no replaces means the release changed shape",
			upstream: "module code.gitea.io/gitea\n\ngo 1.26.2\n",
			wantErr:  "has no replace directives",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			upstream := filepath.Join(dir, "upstream.mod")
			if err := os.WriteFile(upstream, []byte(tc.upstream), 0o644); err != nil {
				t.Fatal(err)
			}
			b := builder{goBin: goBin, workDir: dir}
			got, err := b.wrapperGoMod(context.Background(), upstream)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("wrapperGoMod error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("wrapper go.mod lacks %q:\n%s", w, got)
				}
			}
			// The go command must accept what we wrote.
			if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := b.run(context.Background(), nil, "mod", "edit", "-json"); err != nil {
				t.Errorf("wrapper go.mod does not parse: %v\n%s", err, got)
			}
		})
	}
}

func TestCopyTreeMakesWritableCopies(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "static")
	if err := os.MkdirAll(filepath.Join(src, "locale"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(src, "locale", "locale_en-US.ini")
	if err := os.WriteFile(file, []byte("home = Home\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	// The module cache is read-only, folders included.
	if err := os.Chmod(filepath.Join(src, "locale"), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(filepath.Join(src, "locale"), 0o755) })
	if err := copyTree(src, dst); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dst, "locale", "locale_en-US.ini"))
	if err != nil || string(data) != "home = Home\n" {
		t.Fatalf("copy = %q, %v", data, err)
	}
	if err := os.RemoveAll(dst); err != nil {
		t.Errorf("the copy cannot be removed: %v", err)
	}
}

func TestLockFileWaitsForTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gitea.lock")
	unlock, err := toolcache.Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := toolcache.Lock(ctx, path); err == nil || !strings.Contains(err.Error(), "wait for lock") {
		t.Fatalf("second lock = %v, want a wait that ends with the context", err)
	}
	unlock()
	unlock2, err := toolcache.Lock(context.Background(), path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

// startGroup starts a sleeping process leading its own process group, as
// Gitea runs, and reaps it in the background.
func startGroup(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	return cmd.Process.Pid
}

// deadPid returns the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func waitGone(pid int) bool {
	for i := 0; i < 100; i++ {
		if !processAlive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestStopOrphans(t *testing.T) {
	type run struct {
		owner    string // "self", "dead", "none", "reused" (right pid, wrong start time)
		old      bool   // folder older than orphanGrace
		wantStop bool
		wantKept bool
	}
	cases := []struct {
		name string
		run  run
	}{
		{"owner killed: gitea stopped, folder removed", run{owner: "dead", wantStop: true}},
		{"owner alive: left alone", run{owner: "self", wantKept: true}},
		{"owner pid reused by another process: stopped", run{owner: "reused", wantStop: true}},
		{"no owner record yet, new folder: left alone", run{owner: "none", wantKept: true}},
		{"no owner record, old folder: stopped", run{owner: "none", old: true, wantStop: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runs := t.TempDir()
			dir := filepath.Join(runs, "run-1")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			owner := filepath.Join(dir, "owner.pid")
			switch tc.run.owner {
			case "self":
				if err := writeRecord(owner, os.Getpid()); err != nil {
					t.Fatal(err)
				}
			case "dead":
				if err := os.WriteFile(owner, []byte(strconv.Itoa(deadPid(t))+" 12345\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			case "reused":
				if err := os.WriteFile(owner, []byte(strconv.Itoa(os.Getpid())+" 1\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			pid := startGroup(t)
			if err := writeRecord(filepath.Join(dir, "gitea.pid"), pid); err != nil {
				t.Fatal(err)
			}
			if tc.run.old {
				old := time.Now().Add(-2 * orphanGrace)
				if err := os.Chtimes(dir, old, old); err != nil {
					t.Fatal(err)
				}
			}

			stopOrphans(runs)

			_, statErr := os.Stat(dir)
			if tc.run.wantKept {
				if statErr != nil || !processAlive(pid) {
					t.Errorf("a live run was touched: folder %v, process alive %v", statErr, processAlive(pid))
				}
				return
			}
			if !waitGone(pid) {
				t.Errorf("orphaned gitea (pid %d) still runs", pid)
			}
			if !os.IsNotExist(statErr) {
				t.Errorf("orphaned run folder still exists (%v)", statErr)
			}
		})
	}
}

func TestStopOrphansSparesAStrangerWithTheRecordedPid(t *testing.T) {
	runs := t.TempDir()
	dir := filepath.Join(runs, "run-1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(deadPid(t))+" 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The recorded gitea pid now belongs to another process (wrong start
	// time): it must not be signalled.
	stranger := startGroup(t)
	if err := os.WriteFile(filepath.Join(dir, "gitea.pid"), []byte(strconv.Itoa(stranger)+" 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stopOrphans(runs)
	if !processAlive(stranger) {
		t.Errorf("a process that merely reuses the recorded pid was stopped")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("orphaned run folder still exists (%v)", err)
	}
}

func TestProcStartTime(t *testing.T) {
	self, err := procStartTime(os.Getpid())
	if err != nil || self == "" {
		t.Fatalf("procStartTime(self) = %q, %v", self, err)
	}
	if _, err := strconv.ParseUint(self, 10, 64); err != nil {
		t.Errorf("start time %q is not a number", self)
	}
	if _, err := procStartTime(deadPid(t)); err == nil {
		t.Errorf("procStartTime of an exited process succeeded")
	}
}

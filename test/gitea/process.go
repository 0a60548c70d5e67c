package gitea

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A record is "<pid> <start time>" in a file: the start time (from
// /proc/<pid>/stat) tells the process apart from a later one that got the
// same pid, so a cleanup never signals a stranger.
func writeRecord(path string, pid int) error {
	start, err := procStartTime(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strconv.Itoa(pid)+" "+start+"\n"), 0o644)
}

// recordAlive reads a record and reports its pid and whether that very
// process still runs.
func recordAlive(path string) (int, bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false, err
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 0, false, fmt.Errorf("%s: want \"<pid> <start time>\", have %q", path, data)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return 0, false, fmt.Errorf("%s: bad pid %q", path, f[0])
	}
	start, err := procStartTime(pid)
	return pid, err == nil && start == f[1], nil
}

// procStartTime is field 22 of /proc/<pid>/stat, the process's start time
// in clock ticks since boot; a zombie counts as gone.
func procStartTime(pid int) (string, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	if f[0] == "Z" {
		return "", fmt.Errorf("process %d is a zombie", pid)
	}
	return f[19], nil
}

func processAlive(pid int) bool {
	_, err := procStartTime(pid)
	return err == nil
}

// orphanGrace spares a run folder whose owner record is not written yet:
// another process may be starting it right now.
const orphanGrace = time.Minute

// stopOrphans stops the Gitea of every run folder whose owning test process
// is gone (killed before it could Close) and removes the folder. Instances
// of live test processes, in parallel packages, are left alone.
func stopOrphans(runs string) {
	dirs, _ := filepath.Glob(filepath.Join(runs, "run-*"))
	for _, dir := range dirs {
		_, ownerAlive, err := recordAlive(filepath.Join(dir, "owner.pid"))
		if ownerAlive {
			continue
		}
		if os.IsNotExist(err) {
			if fi, statErr := os.Stat(dir); statErr == nil && time.Since(fi.ModTime()) < orphanGrace {
				continue
			}
		}
		if pid, alive, _ := recordAlive(filepath.Join(dir, "gitea.pid")); alive {
			stopGroup(pid, nil)
		}
		_ = os.RemoveAll(dir)
	}
}

package gitea

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/refit-gitops/refit/test/toolcache"
)

// Version is the Gitea release the tests run, built from the module proxy.
const Version = "v1.26.0"

// module is Gitea's Go module; its root is the main package.
const module = "code.gitea.io/gitea"

// buildTags give Gitea its SQLite driver (cgo, mattn/go-sqlite3); without
// them it can only talk to an external database.
const buildTags = "sqlite sqlite_unlock_notify"

// staticDirs are the folders of the module that a build without the bindata
// tag reads at run time: options holds the locale files Gitea refuses to
// start without, templates and public serve the web UI.
func staticDirs() []string { return []string{"options", "templates", "public"} }

// Binary is a built Gitea.
type Binary struct {
	// Path is the gitea executable.
	Path string
	// StaticDir holds Gitea's options, templates and public folders
	// (STATIC_ROOT_PATH), copied from the module so the cache entry does
	// not depend on the module cache staying around.
	StaticDir string
}

// EnsureBinary builds Gitea into cacheDir/tools/gitea-<Version> unless it is
// there, and returns it. Concurrent callers wait on a file lock instead of
// building twice. Progress goes to log.
func EnsureBinary(ctx context.Context, cacheDir string, log io.Writer) (*Binary, error) {
	dir := filepath.Join(cacheDir, "tools", "gitea-"+Version)
	bin := &Binary{Path: filepath.Join(dir, "gitea"), StaticDir: filepath.Join(dir, "static")}
	if complete(bin) {
		return bin, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, errors.New("the go toolchain is not on PATH: it is needed to build gitea from the module proxy")
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("create tools cache: %w", err)
	}
	unlock, err := toolcache.Lock(ctx, dir+".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if complete(bin) { // built by another process while we waited
		return bin, nil
	}
	if log == nil {
		log = io.Discard
	}
	fmt.Fprintf(log, "building gitea-%s (gitea), first time only, about 8 minutes on 2 cores\n", Version)
	start := time.Now()
	// Build into a fresh folder and rename it into place, so an interrupted
	// build never leaves a half-filled cache entry behind.
	tmp := dir + ".partial"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("gitea-%s: %w", Version, err)
	}
	b := builder{goBin: goBin, workDir: filepath.Join(cacheDir, "tools", "build", "gitea-"+Version)}
	if err := b.build(ctx, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("build gitea-%s: %w", Version, err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("gitea-%s: %w", Version, err)
	}
	fmt.Fprintf(log, "built gitea-%s in %s\n", Version, time.Since(start).Round(time.Second))
	return bin, nil
}

func complete(b *Binary) bool {
	fi, err := os.Stat(b.Path)
	if err != nil || fi.Mode()&0o111 == 0 {
		return false
	}
	for _, d := range staticDirs() {
		if _, err := os.Stat(filepath.Join(b.StaticDir, d)); err != nil {
			return false
		}
	}
	return true
}

// builder runs the go command in a throw-away wrapper module.
type builder struct {
	goBin   string
	workDir string
}

// build downloads the Gitea module, writes a wrapper module that requires
// it with the replace directives of Gitea's own go.mod (a dependency's
// replaces do not apply to the module that requires it, and Gitea pins
// forks and older versions that way), builds it into outDir and copies the
// static folders beside it.
func (b builder) build(ctx context.Context, outDir string) error {
	if err := os.MkdirAll(b.workDir, 0o755); err != nil {
		return err
	}
	out, err := b.run(ctx, nil, "mod", "download", "-json", module+"@"+Version)
	if err != nil {
		return err
	}
	var dl struct{ GoMod, Dir, Error string }
	if err := json.Unmarshal(out, &dl); err != nil {
		return fmt.Errorf("go mod download %s@%s: %w", module, Version, err)
	}
	if dl.Error != "" {
		return fmt.Errorf("go mod download %s@%s: %s", module, Version, dl.Error)
	}
	goMod, err := b.wrapperGoMod(ctx, dl.GoMod)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.workDir, "go.mod"), []byte(goMod), 0o644); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(b.workDir, "go.sum"))
	ldflags := fmt.Sprintf("-s -w -X main.Version=%s -X 'main.Tags=%s'", strings.TrimPrefix(Version, "v"), buildTags)
	// CGO_ENABLED=1: a cgo-less build links no SQLite driver, and Gitea
	// would only fail at start.
	if _, err := b.run(ctx, []string{"CGO_ENABLED=1"}, "build", "-tags", buildTags, "-ldflags", ldflags,
		"-o", filepath.Join(outDir, "gitea"), module); err != nil {
		return err
	}
	for _, d := range staticDirs() {
		if err := copyTree(filepath.Join(dl.Dir, d), filepath.Join(outDir, "static", d)); err != nil {
			return fmt.Errorf("copy %s of %s@%s: %w", d, module, Version, err)
		}
	}
	return nil
}

// wrapperGoMod reads Gitea's go.mod with "go mod edit -json" (the go
// command's own parser) and returns a go.mod requiring Gitea with the same
// go version, replaces and excludes.
func (b builder) wrapperGoMod(ctx context.Context, upstream string) (string, error) {
	out, err := b.run(ctx, nil, "mod", "edit", "-json", upstream)
	if err != nil {
		return "", err
	}
	type modVersion struct{ Path, Version string }
	var mod struct {
		Go      string
		Replace []struct{ Old, New modVersion }
		Exclude []modVersion
	}
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", fmt.Errorf("read %s: %w", upstream, err)
	}
	if len(mod.Replace) == 0 {
		return "", fmt.Errorf("%s has no replace directives: the wrapper module would not match the release", upstream)
	}
	var s strings.Builder
	fmt.Fprintf(&s, "module refit.local/gitea-tools\n\ngo %s\n\nrequire %s %s\n\nreplace (\n", mod.Go, module, Version)
	for _, r := range mod.Replace {
		if r.New.Version == "" {
			return "", fmt.Errorf("%s replaces %s with the folder %s, which a wrapper module cannot use", upstream, r.Old.Path, r.New.Path)
		}
		old := r.Old.Path
		if r.Old.Version != "" {
			old += " " + r.Old.Version
		}
		fmt.Fprintf(&s, "\t%s => %s %s\n", old, r.New.Path, r.New.Version)
	}
	s.WriteString(")\n")
	for _, e := range mod.Exclude {
		fmt.Fprintf(&s, "\nexclude %s %s\n", e.Path, e.Version)
	}
	return s.String(), nil
}

// run runs go with args in the work folder. Its output goes to build.log
// there; on failure the error carries the last lines of it.
func (b builder) run(ctx context.Context, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, b.goBin, args...)
	cmd.Dir = b.workDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=mod"))
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	logPath := filepath.Join(b.workDir, "build.log")
	_ = os.WriteFile(logPath, append(stdout.Bytes(), stderr.Bytes()...), 0o644)
	if err != nil {
		// go mod download -json reports a missing module on stdout.
		tail := toolcache.LastLines(stderr.String(), 20)
		if tail == "" {
			tail = toolcache.LastLines(stdout.String(), 20)
		}
		return nil, fmt.Errorf("go %s: %w\n%s(full log: %s)", strings.Join(args, " "), err, tail, logPath)
	}
	return stdout.Bytes(), nil
}

// copyTree copies a folder of the read-only module cache as writable files,
// so the cache entry can be removed like any other.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, 0o644)
		default: // the module zip holds no symlinks or devices
			return nil
		}
	})
}

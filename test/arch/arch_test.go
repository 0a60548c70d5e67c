// Package arch checks that refit's packages import each other one way only
// (source → render → diff → apply / inplace → reconcile → cmd), so the
// architecture in DESIGN.md checks itself.
package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/refit-gitops/refit"

// allowed lists, for each package, the refit packages it may import.
var allowed = map[string][]string{
	"source": nil,
	"render": nil,
	"diff":   nil,
	// api/v1alpha1 is the App API: types any package may read, importing
	// none of refit's.
	"api/v1alpha1": nil,
	"config":       {"api/v1alpha1"},
	"status":       nil,
	// shard splits Apps among replicas through Leases (client-go only);
	// the controller calls it, never the other way.
	"shard": nil,
	"apply": {"diff"},
	// story is the event stream every stage may tell (it names workloads
	// by diff.Ref); web only draws it.
	"story":     {"diff"},
	"inplace":   {"diff", "story"},
	"reconcile": {"source", "render", "diff", "apply", "inplace", "story"},
	"web":       {"diff", "story"},
	"cmd/refit": {"api/v1alpha1", "source", "render", "diff", "apply", "inplace", "reconcile", "config", "status", "story", "web", "shard"},
}

func TestImportsGoOneWay(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(out)
	seen := map[string]bool{}
	for {
		var pkg struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&pkg); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(pkg.ImportPath, module), "/")
		if strings.HasPrefix(name, "test/") {
			continue // tests, benchmarks and the demo may use anything
		}
		seen[name] = true
		ok, known := allowed[name]
		if !known {
			t.Errorf("package %s is not in the import rules of test/arch: add it", name)
			continue
		}
		var bad []string
		for _, imp := range pkg.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(imp, module+"/")
			if !contains(ok, dep) {
				bad = append(bad, dep)
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("%s imports %v; it may import only %v", name, bad, ok)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	for name := range allowed {
		if !seen[name] {
			t.Errorf("package %s named in the rules does not exist", name)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

//go:build bench

package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/refit-gitops/refit/test/gitserver"
)

// appsRow is one N of TestAppsAtScale.
type appsRow struct {
	n                    int
	cold                 time.Duration
	peak                 float64
	git                  gitserver.Counts
	requests             requestCounts
	one, all             time.Duration
	reapplied, requests1 int
}

// TestAppsAtScale measures one `refit run` of N App objects on one
// repository from cold: the time until every App is Ready at the head
// commit (read from the Apps by a watch), peak RSS, Git listings and
// fetches as the Git server counts them, API requests as the API server
// counts them, by verb and resource. Then one commit changing one app: the
// time until that App is Ready at it, and how many apps re-applied
// anything (refit's count of applied reconciliations, per app). N from
// BENCH_APPS (default 100,500,1000); each N on a cluster of its own.
func TestAppsAtScale(t *testing.T) {
	ns := benchSizes(t, "BENCH_APPS", []int{100, 500, 1000})
	bin := buildRefit(t)
	var rows []appsRow
	for _, n := range ns {
		t.Run(fmt.Sprint(n), func(t *testing.T) { rows = append(rows, appsAtScale(t, bin, n)) })
	}
	fmt.Println("apps | from cold: all Ready | peak RSS | Git listings / fetches | API requests (per app) | one-app commit: that App Ready / all at the commit | apps re-applied | API requests for the commit")
	for _, r := range rows {
		fmt.Printf("%d | %s | %.0f MiB | %d / %d | %d (%.1f) | %s / %s | %d | %d\n", r.n, r.cold.Round(100*time.Millisecond), r.peak,
			r.git.Lists, r.git.Fetches, r.requests.total(), float64(r.requests.total())/float64(r.n),
			r.one.Round(100*time.Millisecond), r.all.Round(100*time.Millisecond), r.reapplied, r.requests1)
	}
	for _, r := range rows {
		fmt.Printf("API requests from cold, %d apps (every client), top 20 by verb and resource:\n%s", r.n, r.requests.top(20, r.n))
	}
	fmt.Println("command: BENCH_APPS=" + sizesFlag(ns) + " go test -tags bench -count=1 -timeout 90m -run 'AppsAtScale$' -v ./test/bench/")
}

func appsAtScale(t *testing.T, bin string, n int) appsRow {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	bed := startAppsBed(t, "apps", srv)
	repoName := fmt.Sprintf("mono%d", n)
	repo := srv.NewRepo(t, repoName)
	files := map[string]string{}
	for i := range n {
		benchApps(files, i, 1)
	}
	head := repo.Commit(files, "apps")
	bed.createApps(t, n, repo.HTTPURL())
	apps := bed.watchApps(t)

	requests0 := apiRequests(t, bed)
	start := time.Now()
	p := startRefit(t, bin, bed, fmt.Sprint(n))
	row := appsRow{n: n}
	row.cold = apps.wait(t, "every App Ready at the head", head, start, 20*time.Minute, func() bool { return apps.readyAt(head) == n })
	row.peak = peakRSSMiB(t, p.cmd.Process.Pid)
	row.git = srv.Counts(repoName)
	requests1 := apiRequests(t, bed)
	row.requests = requests1.since(requests0)

	// One commit changing one app.
	before := p.successes()
	changed := map[string]string{}
	benchApps(changed, 0, 2)
	next := repo.Commit(map[string]string{"apps/app0000/app.yaml": changed["apps/app0000/app.yaml"]}, "app0000 v2")
	pushed := time.Now() // refit's share starts here
	row.one = apps.wait(t, "app0000 Ready at the one-app commit", next, pushed, 5*time.Minute, func() bool { return apps.isReadyAt(appName(0), next) })
	row.all = apps.wait(t, "every App Ready at the one-app commit", next, pushed, 5*time.Minute, func() bool { return apps.readyAt(next) == n })
	row.requests1 = apiRequests(t, bed).since(requests1).total()
	for app, c := range p.successes() {
		if c > before[app] {
			row.reapplied++
		}
	}
	return row
}

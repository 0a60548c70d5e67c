package source_test

import (
	"fmt"
	"testing"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

// BenchmarkPoll compares, over smart HTTP on loopback with basic auth, a
// poll that finds the ref unchanged (one ref listing, no fetch) with a
// poll that must fetch and check out (a fresh cache each time). The
// repository holds 200 files.
//
//	go test -run '^$' -bench Poll -benchmem ./source
func BenchmarkPoll(b *testing.B) {
	srv := gitserver.New(b, gitserver.DefaultOptions())
	repo := srv.NewRepo(b, "bench")
	files := map[string]string{}
	for i := 0; i < 200; i++ {
		files[fmt.Sprintf("apps/app-%03d.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-%03d\n", i)
	}
	repo.Commit(files, "200 files")
	auth := source.Auth{Username: srv.Username(), Password: srv.Password()}

	b.Run("unchanged", func(b *testing.B) {
		p := newPoller(b, repo.HTTPURL(), source.Ref{Branch: "main"}, auth)
		poll(b, p) // the one fetch
		for b.Loop() {
			if rev := poll(b, p); rev.Fetched {
				b.Fatal("an unchanged ref was fetched")
			}
		}
		st := p.Stats()
		if st.Fetches != 1 {
			b.Fatalf("stats = %+v: want exactly 1 fetch", st)
		}
		b.ReportMetric(float64(st.Fetches-1)/float64(b.N), "fetches/op")
	})
	b.Run("fetch", func(b *testing.B) {
		for b.Loop() {
			p := newPoller(b, repo.HTTPURL(), source.Ref{Branch: "main"}, auth)
			if rev := poll(b, p); !rev.Fetched {
				b.Fatal("a fresh cache did not fetch")
			}
		}
		b.ReportMetric(1, "fetches/op")
	})
}

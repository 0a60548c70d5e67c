package main

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/refit-gitops/refit/config"
)

// The checkout caps reach the poller from the flags and from the config,
// and a size that is not one is an error naming where it came from.
func TestCheckoutLimitsWiring(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		file, tree int64
		wantErr    string
	}{
		{"defaults", nil, 64 << 20, 512 << 20, ""},
		{"flags", []string{"--max-file-size", "1Ki", "--max-tree-size", "2M"}, 1024, 2_000_000, ""},
		{"not a size", []string{"--max-file-size", "lots"}, 0, 0, `--max-file-size: "lots": want a size such as 64Mi`},
		{"zero", []string{"--max-tree-size", "0"}, 0, 0, `--max-tree-size: "0": want a positive size`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f sourceFlags
			fl := pflag.NewFlagSet("test", pflag.ContinueOnError)
			f.register(fl)
			if err := fl.Parse(append([]string{"--repo", "https://git.example.com/a.git", "--cache-dir", t.TempDir()}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			opts, err := f.sourceOptions()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("sourceOptions: %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.Checkout.MaxFileBytes != tc.file || opts.Checkout.MaxTreeBytes != tc.tree {
				t.Errorf("limits %+v; want file %d, tree %d", opts.Checkout, tc.file, tc.tree)
			}
		})
	}

	w := &appWiring{cacheDir: t.TempDir()}
	app := config.App{Name: "shop", Source: config.Source{URL: "https://git.example.com/a.git",
		Limits: &config.Limits{MaxFileSize: "8Mi", MaxTreeSize: "1Gi", MaxEntries: 500}}}
	opts, err := w.sourceOptions(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	if got := opts.Checkout; got.MaxFileBytes != 8<<20 || got.MaxTreeBytes != 1<<30 || got.MaxEntries != 500 {
		t.Errorf("config limits %+v; want 8Mi, 1Gi, 500", got)
	}
}

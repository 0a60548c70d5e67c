package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/refit-gitops/refit/render"
)

func newRenderCommand() *cobra.Command {
	var f sourceFlags
	cmd := &cobra.Command{
		Use:   "render (--dir DIR | --repo URL [--ref REF]) [--path PATH]",
		Short: "Print the objects one path of a folder or repository renders to",
		Long: `Render builds PATH with kustomize (a folder without a kustomization is
built from its Kubernetes YAML files) and prints the objects as a YAML stream.
Nothing outside the folder or repository is read; remote bases need
--allow-remote-bases. The password and token may also come from
REFIT_GIT_PASSWORD and REFIT_GIT_TOKEN, which keeps them out of ps.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.render(cmd.Context(), cmd.OutOrStdout())
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func (f *sourceFlags) render(ctx context.Context, out io.Writer) error {
	root, _, err := f.checkout(ctx)
	if err != nil {
		return err
	}
	objs, err := render.Render(ctx, render.Options{Root: root, Path: f.path, AllowRemoteBases: f.allowRemoteBases})
	if err != nil {
		return err
	}
	return render.Encode(out, objs)
}

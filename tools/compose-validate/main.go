// compose-validate loads compose files with compose-go, the loader Docker Compose itself
// uses, so `make test` catches what `docker compose config` would reject (schema errors,
// a dependency on an undefined service, bad interpolation) on machines without Docker.
//
// Usage: compose-validate FILE [FILE...]   (later files override earlier ones, as with -f)
// Prints "valid: N services (a, b, ...)" and exits 0, or prints the error and exits 1.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-validate FILE [FILE...]")
		os.Exit(2)
	}
	files := os.Args[1:]
	// Relative paths (build contexts, bind mounts, .env) resolve against the first file's
	// folder, as `docker compose -f FILE` does.
	workdir, err := filepath.Abs(filepath.Dir(files[0]))
	if err != nil {
		fail(err)
	}
	opts, err := cli.NewProjectOptions(
		files,
		cli.WithWorkingDirectory(workdir),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	names := make([]string, 0, len(project.Services))
	for name := range project.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Printf("valid: %d services (%s)\n", len(names), strings.Join(names, ", "))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "invalid: %v\n", err)
	os.Exit(1)
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/service"
)

// cmdUninstall is `uninstall [--purge]`: it removes the per-user service
// (best effort) and, with --purge, the config dir with the credentials.
// The binary itself is removed by installers/uninstall.sh (a running
// binary cannot delete itself on every platform).
func cmdUninstall(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	purge := fs.Bool("purge", false, "also delete the credentials and config dir")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := service.Uninstall(ctx, service.Options{Scope: service.User, Warn: func(string) {}}); err != nil {
		fmt.Fprintln(stderr, "warning: removing the service:", err)
	}
	if !*purge {
		fmt.Fprintln(stdout, "removed the opengeni-agent service; credentials kept (uninstall --purge removes them).")
		return 0
	}
	dir, err := config.Dir()
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent uninstall:", err)
		return 1
	}
	if _, err := os.Stat(dir); err == nil {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(stderr, "opengeni-agent uninstall:", err)
			return 1
		}
		fmt.Fprintf(stdout, "removed credentials at %s.\n", dir)
	}
	fmt.Fprintln(stdout, "opengeni-agent fully uninstalled (credentials purged).")
	return 0
}

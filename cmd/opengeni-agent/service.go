package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opengeni/opengeni-agent/agent/service"
)

// exitServiceUnavailable is the exit code of a service action that could
// not reach the service manager (nothing was changed); install.sh tells it
// apart from a failure.
const exitServiceUnavailable = 3

// managerUnavailable: there is no service manager to act on here.
func managerUnavailable(err error) bool {
	return errors.Is(err, service.ErrUnavailable) || errors.Is(err, service.ErrUnsupported)
}

// cmdService is `service install|uninstall|start|stop|status [--system]`
// (install also --print and --restart).
func cmdService(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: opengeni-agent service install|uninstall|start|stop|status [--system] [--print] [--restart]")
		return 2
	}
	return lifecycle(args[0], args[1:], stdout, stderr, "service "+args[0])
}

// lifecycle runs one service action; the top-level start/stop/status are
// the same actions under a shorter name.
func lifecycle(action string, args []string, stdout, stderr io.Writer, name string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	system := fs.Bool("system", false, "the machine-wide service (root/administrator) instead of the per-user one")
	var print, restart *bool
	switch action {
	case "install":
		print = fs.Bool("print", false, "print exactly what would be written, touch nothing")
		restart = fs.Bool("restart", false, "restart the agent even if its definition did not change")
	case "start":
		restart = fs.Bool("restart", false, "restart the agent if it is already running")
	case "uninstall", "stop", "status":
	default:
		fmt.Fprintf(stderr, "opengeni-agent: unknown service action %q\n", action)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	o := service.Options{Scope: service.ScopeFromFlag(*system), Out: stdout,
		Warn: func(s string) { fmt.Fprintln(stderr, "warning:", s) }}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintf(stderr, "opengeni-agent %s: %v\n", name, err)
		if managerUnavailable(err) {
			fmt.Fprintln(stderr, "Nothing was changed.")
			return exitServiceUnavailable
		}
		return 1
	}
	switch action {
	case "install":
		o.Print, o.Restart = *print, *restart
		res, err := service.Install(ctx, o)
		if err != nil {
			return fail(err)
		}
		if o.Print {
			return 0
		}
		what := "unchanged"
		if res.Changed {
			what = "written"
		}
		where := res.Path
		if where == "" {
			where = service.WindowsName + " (service manager)"
		}
		state := "already running, left alone"
		switch {
		case res.Restarted:
			state = "restarted"
		case res.Started:
			state = "started"
		}
		fmt.Fprintf(stdout, "opengeni-agent service (%s scope): %s %s; %s.\n", o.Scope, where, what, state)
	case "uninstall":
		if err := service.Uninstall(ctx, o); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "uninstalled the opengeni-agent service (%s scope).\n", o.Scope)
	case "start":
		var err error
		if *restart {
			err = service.Restart(ctx, o)
		} else {
			err = service.Start(ctx, o)
		}
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, "started the opengeni-agent service.")
	case "stop":
		if err := service.Stop(ctx, o); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, "stopped the opengeni-agent service.")
	case "status":
		st, err := service.Status(ctx, o)
		if managerUnavailable(err) {
			// The status asked for is known: there is no service to query.
			fmt.Fprintf(stdout, "opengeni-agent service (%s scope): %v\n", o.Scope, err)
			return 0
		}
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "opengeni-agent service (%s scope): %s", o.Scope, st)
		if st.Detail != "" && st.Installed {
			fmt.Fprintf(stdout, " [%s]", st.Detail)
		}
		fmt.Fprintln(stdout)
	}
	return 0
}

// openLogFile opens the --log-file for appending (creating its directory).
func openLogFile(path string) (*os.File, error) {
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' || p[i] == '\\' {
			return p[:i]
		}
	}
	return "."
}

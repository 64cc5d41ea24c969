package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/audit"
	"github.com/opengeni/opengeni-agent/agent/config"
)

// The owner's view: the audit log of what the platform did on this machine,
// and the pause switch.

// auditFlags are the run flags of the audit log.
type auditFlags struct {
	Off          bool
	MaxFileBytes int64
	MaxFiles     int
	RecordInput  bool
}

func (f *auditFlags) register(fs *flag.FlagSet) {
	fs.BoolFunc("no-audit", "do not keep the local audit log of what the platform did (not recommended)", func(string) error {
		f.Off = true
		return nil
	})
	fs.Int64Var(&f.MaxFileBytes, "audit-max-bytes", audit.DefaultMaxFileBytes, "rotate the audit log when a file reaches this size")
	fs.IntVar(&f.MaxFiles, "audit-files", audit.DefaultMaxFiles, "audit log files kept, the live one included")
	fs.BoolVar(&f.RecordInput, "audit-record-input", os.Getenv("OPENGENI_AUDIT_RECORD_INPUT") == "1",
		"also record what is typed into terminals and the desktop (env OPENGENI_AUDIT_RECORD_INPUT=1; off by default)")
}

// auditDir is the audit log's directory under the config dir.
func auditDir(configDir string) string { return filepath.Join(configDir, audit.DirName) }

func openAudit(configDir string, f auditFlags, logger *slog.Logger) (*audit.Log, error) {
	return audit.Open(audit.Options{Dir: auditDir(configDir), MaxFileBytes: f.MaxFileBytes, MaxFiles: f.MaxFiles,
		RecordInput: f.RecordInput, Logger: logger})
}

func closeAudit(l *audit.Log) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.Close(ctx)
}

// pauseSwitch reads the owner's pause switch live for an agent.
func pauseSwitch(store *config.Store) func() agent.PauseState {
	return func() agent.PauseState {
		p, on := store.Paused(time.Now())
		return agent.PauseState{Paused: on, Until: p.Until}
	}
}

// followContext ends `audit --follow` (Ctrl-C; tests replace it).
var followContext = func() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt)
}

// cmdAudit is `audit [--json] [--follow] [--since 1h] [--connection ID] [--op exec]`.
func cmdAudit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the records as JSON lines")
	follow := fs.Bool("follow", false, "keep printing records as the running agent writes them")
	since := fs.Duration("since", 0, "only records from this long ago (e.g. 1h, 30m)")
	conn := fs.String("connection", "", "only this connection (id or prefix), workspace id or agent id")
	op := fs.String("op", "", "only this op (exec, fs_write, pty_open, ...) or event (pause, resume)")
	dir := fs.String("dir", "", "the audit log directory (default: <config dir>/audit)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return flagExit(err)
	}
	if *dir == "" {
		d, err := config.Dir()
		if err != nil {
			fmt.Fprintln(stderr, "opengeni-agent:", err)
			return 1
		}
		*dir = auditDir(d)
	}
	f := audit.Filter{Connection: *conn, Op: *op}
	if *since > 0 {
		f.Since = time.Now().Add(-*since)
	}
	var emit func(audit.Record) error
	var flush func()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		emit = func(r audit.Record) error { return enc.Encode(r) }
		flush = func() {}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tCONNECTION\tOP\tRESULT\tTOOK\tIN\tOUT\tDETAILS")
		emit = func(r audit.Record) error {
			writeAuditRow(tw, &r)
			if *follow {
				return tw.Flush()
			}
			return nil
		}
		flush = func() { _ = tw.Flush() }
	}
	var err error
	if *follow {
		ctx, stop := followContext()
		defer stop()
		flush()
		err = audit.Follow(ctx, *dir, f, 0, emit)
	} else {
		err = audit.Read(*dir, f, emit)
	}
	flush()
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	return 0
}

func writeAuditRow(w io.Writer, r *audit.Record) {
	op, result := r.Op, r.Code
	if r.Event != "op" {
		op, result = r.Event, ""
	}
	if r.Reason != "" {
		result += " (" + r.Reason + ")"
	}
	conn := r.Connection
	if conn == "" {
		conn = r.Agent
	}
	took := ""
	if r.Event == "op" {
		took = (time.Duration(r.DurationMs*1000) * time.Microsecond).Round(time.Microsecond * 10).String()
	}
	details := strings.NewReplacer("\t", " ", "\n", " ").Replace(r.Summary())
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Local().Format("2006-01-02 15:04:05"), conn, op, result, took,
		sizeOf(r.BytesIn, r.Event), sizeOf(r.BytesOut, r.Event), details)
}

func sizeOf(n int, event string) string {
	if event != "op" {
		return ""
	}
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprint(n)
}

// cmdPause is `pause [--for 1h]`: every connection's running agent refuses
// every op but ping and metrics from its next request on.
func cmdPause(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pause", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dur := fs.Duration("for", 0, "resume by itself after this long (e.g. 30m, 2h); default: until `opengeni-agent resume`")
	if pos, err := parseInterspersed(fs, args); err != nil {
		return flagExit(err)
	} else if len(pos) > 0 || *dur < 0 {
		fmt.Fprintln(stderr, "Usage: opengeni-agent pause [--for 1h]")
		return 2
	}
	store, err := config.OpenDefault()
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	now := time.Now()
	var until time.Time
	if *dur > 0 {
		until = now.Add(*dur)
	}
	if _, err := store.SetPause(now, until); err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	when := "until you run `opengeni-agent resume`"
	if !until.IsZero() {
		when = "until " + until.Local().Format(time.RFC1123)
	}
	fmt.Fprintf(stdout, "Paused %s. A running agent refuses every request but ping and metrics from now on and closes its terminals and desktop stream.\n", when)
	return 0
}

// cmdResume is `resume`: lift the pause.
func cmdResume(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if args[0] == "-h" || args[0] == "--help" {
			fmt.Fprintln(stdout, "Usage: opengeni-agent resume")
			return 0
		}
		fmt.Fprintln(stderr, "Usage: opengeni-agent resume")
		return 2
	}
	store, err := config.OpenDefault()
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	_, was := store.Paused(time.Now())
	if err := store.Resume(); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	if !was {
		fmt.Fprintln(stdout, "This machine was not paused.")
		return 0
	}
	fmt.Fprintln(stdout, "Resumed: the platform can work on this machine again.")
	return 0
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/png"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/term"

	"github.com/opengeni/opengeni-agent/agent/desktop"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/gitsvc"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/devstack"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

const ctlUsage = `relay ctl drives one machine through the control library.

Usage: relay ctl [flags] <command> [args]

Commands:
  ping                       is the machine online? (says why not: platform unreachable,
                             credential refused, machine offline or reconnecting)
  metrics                    cpu, load, memory, disk
  exec [--cwd D] -- CMD ...  run a program (argv, no shell); exit code is relayed
  sh 'CMD'                   run a command line through the machine's shell
  ls [-r] [PATH]             list a directory
  stat PATH                  stat a path
  cat PATH                   print a file (any size)
  get REMOTE LOCAL           download a file (any size), with progress
  put LOCAL REMOTE           upload a file (any size), with progress
  mkdir [-p] PATH | mv FROM TO | rm [-r] PATH
  screenshot OUT.png         capture the machine's screen
  click [-button B] [-double] X Y | move X Y    pointer (native pixels; needs consent)
  type TEXT | key NAME       type text / press a key (Enter, ctrl+c, ...; needs consent)
  scroll X Y DX DY           scroll at a point (needs consent)
  git status [REPO]          structured status (JSON)
  git diff [--staged] [REPO] structured diff (JSON)
  git log [-n N] [REPO]      commits (JSON, paged)
  shell [-- CMD ...]         an interactive terminal through the relay ("shell -h")
  approve CODE [--allow-screen-control]
                             approve a machine's pairing (its device-flow user code) on
                             the relay dev platform, with the admin token of --data-dir

Against a running "relay dev" no flag is needed: the NATS URL, control user
and machine come from ctl.json in --data-dir.

Flags:
`

type ctlEnv struct {
	sess *control.Session
	// ops is the session for ops with an op-stream form (exec, get, put,
	// cat): it routes by the platform's store, so it knows the machine's
	// live instance and whether its Hello offered op-stream.
	ops     *control.Session
	target  ctlTarget
	dataDir string // the dev platform's data directory
	stdout  io.Writer
	stderr  io.Writer
}

// defaultDataDir is $OPENGENI_DEV_DATA, else the default data directory
// ("" when there is none; devstack then says why).
func defaultDataDir() string {
	d, _ := devstack.PlatformDataDir()
	return d
}

func cmdCtl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage); fs.PrintDefaults() }
	natsURL := fs.String("nats", envOr("OPENGENI_NATS_URL", "nats://127.0.0.1:"+strconv.Itoa(devstack.DefaultNATSPort)), "NATS URL (env OPENGENI_NATS_URL; default: the dev platform's, from its ctl.json)")
	ws := fs.String("workspace", envOr("OPENGENI_WORKSPACE_ID", devstack.DefaultWorkspaceID), "workspace id (env OPENGENI_WORKSPACE_ID)")
	agentID := fs.String("agent", envOr("OPENGENI_AGENT_ID", devstack.DefaultAgentID), "agent id (env OPENGENI_AGENT_ID)")
	dataDir := fs.String("data-dir", defaultDataDir(), "data directory of the relay dev platform to drive (env "+devstack.EnvDevData+")")
	workdir := fs.String("workdir", "", "session working directory (paths under /workspace map here)")
	timeout := fs.Duration("timeout", control.DefaultTimeout, "per-op timeout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if fs.Arg(0) == "approve" {
		return cmdApprove(*dataDir, fs.Args()[1:], stdout, stderr)
	}
	// Against `relay dev`, take the control user and the paired machine from
	// the dev platform's ctl.json unless told otherwise.
	t := ctlTarget{natsURL: *natsURL, ws: *ws, agentID: *agentID, dataDir: *dataDir, timeout: *timeout}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["nats"] && os.Getenv("OPENGENI_NATS_URL") == "" {
		c, err := devstack.ReadCtlFile(*dataDir)
		if err == nil {
			t.dev = c
			t.natsURL, t.natsOpts, t.user = c.NATSURL, c.NATSOptions(), c.User
			if !set["workspace"] && os.Getenv("OPENGENI_WORKSPACE_ID") == "" {
				t.ws = c.WorkspaceID
			}
			if !set["agent"] && os.Getenv("OPENGENI_AGENT_ID") == "" && c.AgentID != "" {
				t.agentID = c.AgentID
			}
		} else {
			t.devErr = err
		}
	}
	if u, err := url.Parse(t.natsURL); err == nil && u.User != nil {
		t.user = u.User.Username()
	}
	rpc := control.NewNATSRPC(control.DialNATS(t.natsURL, t.natsOpts...))
	defer rpc.Close()
	cfg := control.SessionConfig{WorkspaceID: t.ws, AgentID: t.agentID, RPC: rpc, Timeout: t.timeout, WorkingDir: *workdir}
	sess, err := control.NewSession(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "relay ctl:", err)
		return 2
	}
	cfg.Instances = &machineStore{rpc: rpc}
	ops, err := control.NewSession(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "relay ctl:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &ctlEnv{sess: sess, ops: ops, target: t, dataDir: *dataDir, stdout: stdout, stderr: stderr}
	code, err := e.run(ctx, fs.Arg(0), fs.Args()[1:])
	if err != nil {
		fmt.Fprintln(stderr, "relay ctl:", e.explain(ctx, err))
		if code == 0 {
			code = 1
		}
	}
	return code
}

// cmdApprove is `relay ctl approve USER-CODE [--allow-screen-control]`: it
// approves a device-flow pairing on the dev platform with the admin token
// from its data directory.
func cmdApprove(dataDir string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("approve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	allow := fs.Bool("allow-screen-control", false, "let the platform control the machine's mouse and keyboard (the owner must consent on the machine too)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: relay ctl [--data-dir D] approve USER-CODE [--allow-screen-control]\n\nApprove a machine's pairing (the code `opengeni-agent enroll` prints) on the `relay dev` platform.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	code, rest := "", args
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		code, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if code == "" && fs.NArg() == 1 {
		code = fs.Arg(0)
	} else if fs.NArg() > 0 || code == "" {
		fs.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := devstack.Approve(ctx, dataDir, code, *allow)
	if err != nil {
		var ae *devstack.APIError
		if errors.As(err, &ae) {
			fmt.Fprintf(stderr, "relay ctl: approve %s: %s (HTTP %d)\n", code, ae.Message, ae.Status)
			return 1
		}
		fmt.Fprintln(stderr, "relay ctl: approve:", err)
		return 1
	}
	fmt.Fprintf(stdout, "approved: agent %s (sandbox %s), screen control %s; the machine gets its credentials at its next poll\n",
		r.EnrollmentID, r.SandboxID, map[bool]string{true: "allowed", false: "not allowed"}[r.AllowScreenControl])
	return 0
}

func (e *ctlEnv) run(ctx context.Context, cmd string, args []string) (int, error) {
	s := e.sess
	switch cmd {
	case "shell":
		return e.shell(ctx, args)
	case "ping":
		start := time.Now()
		if err := s.Probe(ctx); err != nil {
			return 1, err
		}
		fmt.Fprintf(e.stdout, "pong from %s in %v\n", s.AgentID(), time.Since(start).Round(time.Microsecond))
		return 0, nil
	case "metrics":
		m, err := s.Metrics(ctx)
		if err != nil {
			return 1, err
		}
		fmt.Fprintf(e.stdout, "cpu %.1f%%  load %.2f %.2f %.2f  mem %s/%s  disk %s/%s\n", m.GetCpuPercent(),
			m.GetLoad1(), m.GetLoad5(), m.GetLoad15(), human(int64(m.GetMemUsedBytes())), human(int64(m.GetMemTotalBytes())),
			human(int64(m.GetDiskUsedBytes())), human(int64(m.GetDiskTotalBytes())))
		return 0, nil
	case "exec":
		fs := flag.NewFlagSet("exec", flag.ContinueOnError)
		cwd := fs.String("cwd", "", "working directory")
		if err := fs.Parse(args); err != nil {
			return 2, nil
		}
		if fs.NArg() == 0 {
			return 2, errors.New("exec: missing command (relay ctl exec -- CMD ARGS...)")
		}
		if e.ops.UsesOpStream(ctx) {
			return e.execStream(ctx, control.ExecRequestOptions{Argv: fs.Args(), Workdir: *cwd})
		}
		r, err := s.ExecArgs(ctx, control.ExecRequestOptions{Argv: fs.Args(), Workdir: *cwd})
		if err != nil {
			return 1, err
		}
		e.stdout.Write(r.GetStdout())
		e.stderr.Write(r.GetStderr())
		if r.GetTimedOut() {
			return 124, errors.New("timed out")
		}
		return int(r.GetExitCode()) & 0xff, nil
	case "sh":
		if len(args) != 1 {
			return 2, errors.New("sh: want one command line in quotes")
		}
		r, err := s.Exec(ctx, control.ExecOptions{Cmd: args[0]})
		if err != nil {
			return 1, err
		}
		io.WriteString(e.stdout, r.Stdout)
		io.WriteString(e.stderr, r.Stderr)
		return r.ExitCode & 0xff, nil
	case "ls":
		fs := flag.NewFlagSet("ls", flag.ContinueOnError)
		rec := fs.Bool("r", false, "recursive")
		if err := fs.Parse(args); err != nil {
			return 2, nil
		}
		entries, err := s.ListFiles(ctx, fs.Arg(0), *rec)
		if err != nil {
			return 1, err
		}
		for _, en := range entries {
			kind := map[agentpb.FsEntryKind]string{agentpb.FsEntryKind_FS_ENTRY_KIND_FILE: "-",
				agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY: "d", agentpb.FsEntryKind_FS_ENTRY_KIND_SYMLINK: "l"}[en.GetKind()]
			fmt.Fprintf(e.stdout, "%s %10s  %s  %s\n", kind, human(int64(en.GetSize())),
				time.UnixMilli(en.GetModifiedMs()).Format("2006-01-02 15:04"), en.GetPath())
		}
		return 0, nil
	case "stat":
		if len(args) != 1 {
			return 2, errors.New("stat: want PATH")
		}
		st, err := s.Stat(ctx, args[0])
		if err != nil {
			return 1, err
		}
		if !st.GetExists() {
			fmt.Fprintf(e.stdout, "%s: does not exist\n", args[0])
			return 1, nil
		}
		en := st.GetEntry()
		fmt.Fprintf(e.stdout, "%s: %s, %d bytes, mode %o, modified %s\n", en.GetPath(), kindName(en.GetKind()), en.GetSize(), en.GetMode(),
			time.UnixMilli(en.GetModifiedMs()).Format(time.RFC3339))
		return 0, nil
	case "cat":
		if len(args) != 1 {
			return 2, errors.New("cat: want PATH")
		}
		_, err := e.ops.ReadFileAll(ctx, args[0], e.stdout, nil)
		return 0, err
	case "get":
		if len(args) != 2 {
			return 2, errors.New("get: want REMOTE LOCAL")
		}
		return 0, e.get(ctx, args[0], args[1])
	case "put":
		if len(args) != 2 {
			return 2, errors.New("put: want LOCAL REMOTE")
		}
		return 0, e.put(ctx, args[0], args[1])
	case "mkdir":
		fs := flag.NewFlagSet("mkdir", flag.ContinueOnError)
		p := fs.Bool("p", false, "create parents")
		if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
			return 2, errors.New("mkdir: want [-p] PATH")
		}
		return 0, s.Mkdir(ctx, fs.Arg(0), *p, 0)
	case "mv":
		if len(args) != 2 {
			return 2, errors.New("mv: want FROM TO")
		}
		return 0, s.Move(ctx, args[0], args[1], true)
	case "rm":
		fs := flag.NewFlagSet("rm", flag.ContinueOnError)
		r := fs.Bool("r", false, "recursive")
		if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
			return 2, errors.New("rm: want [-r] PATH")
		}
		return 0, s.Remove(ctx, fs.Arg(0), *r)
	case "git":
		return e.git(ctx, args)
	case "screenshot", "click", "move", "type", "key", "scroll":
		return e.desktop(ctx, cmd, args)
	}
	return 2, fmt.Errorf("unknown command %q (relay ctl -h lists them)", cmd)
}

func (e *ctlEnv) git(ctx context.Context, args []string) (int, error) {
	if len(args) == 0 {
		return 2, errors.New("git: want status, diff or log")
	}
	fs := flag.NewFlagSet("git "+args[0], flag.ContinueOnError)
	staged := fs.Bool("staged", false, "diff the index instead of the worktree")
	n := fs.Int("n", 20, "commits per page")
	skip := fs.Int("skip", 0, "commits to skip")
	if err := fs.Parse(args[1:]); err != nil {
		return 2, nil
	}
	// An absolute repository path is the root; a relative one is under the
	// machine's workspace root.
	var root string
	repo := fs.Arg(0)
	if strings.HasPrefix(repo, "/") {
		root, repo = repo, ""
	}
	svc := gitsvc.New(gitsvc.SessionRunner(e.sess), gitsvc.Options{WorkspaceRoot: root})
	var out any
	var err error
	switch args[0] {
	case "status":
		out, err = svc.Status(ctx, repo)
	case "diff":
		out, err = svc.Diff(ctx, gitsvc.DiffRequest{Path: repo, Staged: *staged})
	case "log":
		out, err = svc.Log(ctx, gitsvc.LogRequest{Path: repo, MaxCount: *n, Skip: *skip})
	default:
		return 2, fmt.Errorf("git: unknown subcommand %q", args[0])
	}
	if err != nil {
		return 1, err
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return 0, enc.Encode(out)
}

func (e *ctlEnv) get(ctx context.Context, remote, local string) error {
	if st, err := os.Stat(local); err == nil && st.IsDir() {
		local = filepath.Join(local, filepath.Base(remote))
	}
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bar := newProgress(e.stderr, "get "+remote)
	n, err := e.ops.ReadFileAll(ctx, remote, tmp, &control.TransferOptions{Progress: bar.update})
	bar.done(n, err)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), local)
}

func (e *ctlEnv) put(ctx context.Context, local, remote string) error {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	bar := newProgress(e.stderr, "put "+local)
	n, err := e.ops.WriteFileAll(ctx, remote, f, st.Size(), &control.TransferOptions{Progress: bar.update})
	bar.done(n, err)
	return err
}

// execStream runs a command over op-stream: its output is copied here as
// it arrives, and Ctrl-C (ctx) cancels it on the machine, whose process
// tree is killed before this returns 130.
func (e *ctlEnv) execStream(ctx context.Context, req control.ExecRequestOptions) (int, error) {
	exit, err := e.ops.ExecStream(ctx, control.ExecStreamOptions{ExecRequestOptions: req, Stdout: e.stdout, Stderr: e.stderr})
	switch {
	case err != nil && ctx.Err() != nil && exit.GetCancelled():
		return 130, fmt.Errorf("interrupted: the command was cancelled on the machine and its processes killed (op exit code %d)", exit.GetExitCode())
	case err != nil && ctx.Err() != nil:
		return 130, fmt.Errorf("interrupted: the machine was asked to cancel the command but did not confirm within %v: %w", control.CancelGrace, err)
	case err != nil:
		return 1, err
	case exit.GetTimedOut():
		return 124, errors.New("timed out")
	case exit.GetFailureCode() == "OUTPUT_CUT":
		fmt.Fprintln(e.stderr, "relay ctl: a background process kept the output open after the command exited; its later output is not shown")
	}
	return int(exit.GetExitCode()) & 0xff, nil
}

// machineStore resolves the machine's live connection instance and its
// op-stream offer from the platform's store (JetStream KV, read only),
// opened on first use. Where there is none (not a dev platform, no
// JetStream) the machine is reached on its v1 subject, without op-stream.
type machineStore struct {
	rpc  *control.NATSRPC
	once sync.Once
	st   *store.Store
}

func (m *machineStore) open(ctx context.Context) *store.Store {
	m.once.Do(func() {
		nc, err := m.rpc.Conn(ctx)
		if err != nil {
			return
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		m.st, _ = store.Open(octx, js, store.Options{})
	})
	return m.st
}

func (m *machineStore) LiveInstance(ctx context.Context, ws, id string) (string, error) {
	if st := m.open(ctx); st != nil {
		return st.LiveInstance(ctx, ws, id)
	}
	return "", nil
}

func (m *machineStore) OffersOpStream(ctx context.Context, ws, id string) (bool, error) {
	if st := m.open(ctx); st != nil {
		return st.OffersOpStream(ctx, ws, id)
	}
	return false, nil
}

// progress draws a one-line progress bar, at most 10 times a second, only
// when w is a terminal; elsewhere (logs, pipes) it prints just the final
// line.
type progress struct {
	w     io.Writer
	tty   bool
	label string
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, label string) *progress {
	return &progress{w: w, tty: isTerminal(w), label: label, start: time.Now()}
}

// isTerminal reports whether w is a terminal (an *os.File on a tty).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (p *progress) update(done, total int64) {
	if !p.tty || (time.Since(p.last) < 100*time.Millisecond && done != total) {
		return
	}
	p.last = time.Now()
	rate := float64(done) / max(time.Since(p.start).Seconds(), 1e-9)
	if total > 0 {
		pct := float64(done) * 100 / float64(total)
		width := 30
		fill := int(pct / 100 * float64(width))
		fmt.Fprintf(p.w, "\r%s [%s%s] %5.1f%% %s/%s %s/s ", p.label, strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
			pct, human(done), human(total), human(int64(rate)))
		return
	}
	fmt.Fprintf(p.w, "\r%s %s %s/s ", p.label, human(done), human(int64(rate)))
}

func (p *progress) done(n int64, err error) {
	if err != nil {
		if p.tty && !p.last.IsZero() {
			fmt.Fprintln(p.w) // end the bar's line before the error
		}
		return
	}
	line := fmt.Sprintf("%s: %s in %v (%s/s)", p.label, human(n), time.Since(p.start).Round(time.Millisecond),
		human(int64(float64(n)/max(time.Since(p.start).Seconds(), 1e-9))))
	if p.tty {
		fmt.Fprintf(p.w, "\r%s%s\n", line, strings.Repeat(" ", 30))
		return
	}
	fmt.Fprintln(p.w, line)
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// kindName is a readable entry kind.
func kindName(k agentpb.FsEntryKind) string {
	switch k {
	case agentpb.FsEntryKind_FS_ENTRY_KIND_FILE:
		return "file"
	case agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY:
		return "directory"
	case agentpb.FsEntryKind_FS_ENTRY_KIND_SYMLINK:
		return "symlink"
	}
	return "unknown kind"
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (e *ctlEnv) desktop(ctx context.Context, cmd string, args []string) (int, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	button := fs.String("button", "left", "left, right or middle")
	double := fs.Bool("double", false, "double click")
	if err := fs.Parse(args); err != nil {
		return 2, nil
	}
	args = fs.Args()
	ints := func(n int) ([]int32, error) {
		if len(args) != n {
			return nil, fmt.Errorf("%s: want %d numbers", cmd, n)
		}
		out := make([]int32, n)
		for i, a := range args {
			v, err := strconv.Atoi(a)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not a number", cmd, a)
			}
			out[i] = int32(v)
		}
		return out, nil
	}
	var in *agentpb.DesktopInputRequest
	switch cmd {
	case "screenshot":
		if len(args) != 1 {
			return 2, errors.New("screenshot: want OUT.png")
		}
		shot, err := e.screenshot(ctx)
		if err != nil {
			return 1, err
		}
		if err := os.WriteFile(args[0], shot.PNG, 0o644); err != nil {
			return 1, err
		}
		fmt.Fprintf(e.stdout, "%s: %dx%d PNG, %s (screen %dx%d)\n", args[0], shot.Width, shot.Height,
			human(int64(len(shot.PNG))), shot.NativeWidth, shot.NativeHeight)
		if allBlack(shot.PNG) {
			fmt.Fprintln(e.stderr, "note: the screenshot is all black: nothing is drawn on the display yet (a bare virtual display is black; start a program on it)")
		}
		return 0, nil
	case "click", "move":
		xy, err := ints(2)
		if err != nil {
			return 2, err
		}
		action := agentpb.PointerAction_POINTER_ACTION_MOVE
		if cmd == "click" {
			action = agentpb.PointerAction_POINTER_ACTION_CLICK
			if *double {
				action = agentpb.PointerAction_POINTER_ACTION_DOUBLE_CLICK
			}
		}
		btn := map[string]agentpb.PointerButton{"left": agentpb.PointerButton_POINTER_BUTTON_LEFT,
			"right": agentpb.PointerButton_POINTER_BUTTON_RIGHT, "middle": agentpb.PointerButton_POINTER_BUTTON_MIDDLE}[*button]
		if btn == 0 {
			return 2, fmt.Errorf("%s: unknown button %q", cmd, *button)
		}
		in = &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Pointer{Pointer: &agentpb.PointerEvent{X: xy[0], Y: xy[1], Action: action, Button: btn}}}
	case "type", "key":
		if len(args) != 1 {
			return 2, fmt.Errorf("%s: want one argument", cmd)
		}
		in = &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Key{Key: &agentpb.KeyEvent{
			Key: args[0], IsText: cmd == "type", Action: agentpb.KeyAction_KEY_ACTION_PRESS}}}
	case "scroll":
		v, err := ints(4)
		if err != nil {
			return 2, err
		}
		in = &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Scroll{Scroll: &agentpb.ScrollEvent{X: v[0], Y: v[1], DeltaX: v[2], DeltaY: v[3]}}}
	}
	return 0, e.sess.DesktopInput(ctx, in)
}

// screenshot captures the screen. On a headless machine allowed to start a
// virtual display (relay dev --virtual-desktop) that has not started one
// yet, it asks for the desktop first (desktop_ensure) and captures again.
func (e *ctlEnv) screenshot(ctx context.Context) (*control.Screenshot, error) {
	shot, err := e.sess.Screenshot(ctx)
	var ce *control.Error
	if err == nil || !errors.As(err, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED ||
		ce.Detail[desktop.DetailVirtualDisplay] != desktop.VirtualDisplayNotStarted {
		return shot, err
	}
	ens, err := e.sess.DesktopEnsure(ctx, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("starting the virtual display: %w", err)
	}
	d := ens.GetDisplay()
	fmt.Fprintf(e.stderr, "started the machine's virtual display %s (%dx%d)\n", d.GetId(), d.GetWidth(), d.GetHeight())
	return e.sess.Screenshot(ctx)
}

// allBlack reports whether a PNG decodes to black pixels only.
func allBlack(b []byte) bool {
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return false
	}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if cr, cg, cb, _ := img.At(x, y).RGBA(); cr|cg|cb != 0 {
				return false
			}
		}
	}
	return true
}

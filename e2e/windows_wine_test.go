package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/opengeni/opengeni-agent/internal/syncbuf"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/gitsvc"
	"github.com/opengeni/opengeni-agent/internal/devstack"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// EnvWineTest switches TestWindowsUnderWine on.
const EnvWineTest = "OPENGENI_WINE_TEST"

// TestWindowsUnderWine runs the windows/amd64 agent under wine against an
// in-process nats-server and drives it through the control package: exec
// (argv, cmd.exe, env, PATH, exit codes, timeout tree kill, background
// children), file ops with Windows paths, a 20 MB transfer, the go-git
// fallback, pairing and the config store, the instance lock, Ctrl-C, and
// the service definitions; it also runs the Windows-only package tests
// (TestWindows*) of agent/exec and agent/service. What wine 8 cannot carry
// (ConPTY I/O, recursive remove, the service manager runtime, ACLs) is
// skipped with the reason, never passed.
//
// Needs wine64 and binutils-mingw-w64-x86-64 (Debian packages); .ci/run
// installs them and sets OPENGENI_WINE_TEST=1.
func TestWindowsUnderWine(t *testing.T) {
	if os.Getenv(EnvWineTest) != "1" {
		t.Skip("the Windows build under wine runs with " + EnvWineTest + "=1 (needs wine64 and binutils-mingw-w64-x86-64)")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("wine64 runs windows/amd64 binaries on linux/amd64, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	w := setupWine(t)

	t.Run("package tests", func(t *testing.T) {
		for _, bin := range []string{"exec.test.exe", "service.test.exe"} {
			t.Run(bin, func(t *testing.T) {
				t.Parallel()
				w.packageTests(t, bin)
			})
		}
	})

	srv := natstest.Start(t)
	root := t.TempDir()
	const agentID = "agent-wine"
	events := subscribeEvents(t, srv.ClientURL(), testWS, agentID)
	ag := w.start(t, root, []string{"OPENGENI_CONFIG_DIR=" + winPath(filepath.Join(root, "cfg"))},
		"run", "--nats-url", srv.ClientURL(), "--workspace-id", testWS, "--agent-id", agentID, "--log-level", "info")
	rpc := control.NewNATSRPC(control.DialNATS(srv.ClientURL()))
	t.Cleanup(rpc.Close)
	s := wineSession(t, rpc, testWS, agentID, ag)

	t.Run("ping and metrics", func(t *testing.T) {
		ctx := ctxT(t)
		if !s.Ping(ctx) {
			t.Fatal("ping failed")
		}
		m, err := s.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(time.UnixMilli(m.GetSampledAtMs())); d < -time.Hour || d > time.Hour {
			t.Fatalf("metrics sampled at %d, not near now", m.GetSampledAtMs())
		}
	})

	t.Run("exec argv and exit codes", func(t *testing.T) {
		ctx := ctxT(t)
		host, _ := os.Hostname()
		r := execOK(t, s, control.ExecRequestOptions{Argv: []string{"hostname"}})
		if got := strings.TrimSpace(string(r.GetStdout())); r.GetExitCode() != 0 || !strings.EqualFold(got, host) {
			t.Fatalf("hostname: exit %d stdout %q, want %q", r.GetExitCode(), got, host)
		}
		if r := execOK(t, s, control.ExecRequestOptions{Argv: []string{"cmd", "/C", "exit 3"}}); r.GetExitCode() != 3 {
			t.Fatalf("cmd /C exit 3: exit %d", r.GetExitCode())
		}
		_, err := s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"no-such-program-og"}})
		if ce := (*control.Error)(nil); !errors.As(err, &ce) || !ce.OSNotFound {
			t.Fatalf("missing program: %v, want NOT_FOUND", err)
		}
	})

	t.Run("exec cmd shell with request env", func(t *testing.T) {
		r := execOK(t, s, control.ExecRequestOptions{Argv: []string{"echo %OG_WINE%& exit /b 4"}, Shell: true,
			Env: map[string]string{"OG_WINE": "from the request"}})
		if got := strings.TrimRight(string(r.GetStdout()), "\r\n"); r.GetExitCode() != 4 || got != "from the request" {
			t.Fatalf("shell: exit %d stdout %q stderr %q", r.GetExitCode(), r.GetStdout(), r.GetStderr())
		}
	})

	// issue 19 bug 1: a PATH in the request is where argv programs are found.
	t.Run("exec finds a program in the request PATH", func(t *testing.T) {
		tools := filepath.Join(root, "tools")
		copyFile(t, w.helper, filepath.Join(tools, "ogtool.exe"))
		r := execOK(t, s, control.ExecRequestOptions{Argv: []string{"ogtool", "print", "via PATH"},
			Env: map[string]string{"PATH": winPath(tools) + `;C:\windows\system32`}})
		if r.GetExitCode() != 0 || string(r.GetStdout()) != "via PATH" {
			t.Fatalf("exit %d stdout %q stderr %q", r.GetExitCode(), r.GetStdout(), r.GetStderr())
		}
	})

	// issue 19 bug 2: a program in the working directory runs (it failed
	// with os/exec's ErrDot).
	t.Run("exec runs a program in the working directory", func(t *testing.T) {
		copyFile(t, w.helper, filepath.Join(root, "ogcwd.exe"))
		r := execOK(t, s, control.ExecRequestOptions{Argv: []string{"ogcwd", "print", "via cwd"}})
		if r.GetExitCode() != 0 || string(r.GetStdout()) != "via cwd" {
			t.Fatalf("exit %d stdout %q stderr %q", r.GetExitCode(), r.GetStdout(), r.GetStderr())
		}
	})

	t.Run("exec timeout kills the process tree", func(t *testing.T) {
		tag := fmt.Sprintf("ogtree%d", rand.Int())
		marker := filepath.Join(root, tag+".started")
		r := execOK(t, s, control.ExecRequestOptions{Argv: []string{winPath(w.helper), "tree", tag, winPath(marker)}, Timeout: 5 * time.Second})
		if !r.GetTimedOut() || r.GetExitCode() != -1 {
			t.Fatalf("timed_out %v exit %d, want a timeout", r.GetTimedOut(), r.GetExitCode())
		}
		if _, err := os.Stat(marker); err != nil {
			t.Fatalf("the child was never started: %v", err)
		}
		// Parent and child are gone (wine shows Windows processes as Linux
		// processes with their command lines).
		natstest.Eventually(t, 30*time.Second, func() error {
			if pids := tagged(tag); len(pids) > 0 {
				return fmt.Errorf("still running: %v", pids)
			}
			return nil
		})
	})

	t.Run("exec leaves background children running", func(t *testing.T) {
		tag := fmt.Sprintf("ogbg%d", rand.Int())
		t.Cleanup(func() { killTagged(tag) })
		r := execOK(t, s, control.ExecRequestOptions{Argv: []string{winPath(w.helper), "background", tag}, Timeout: 30 * time.Second})
		if r.GetTimedOut() || r.GetExitCode() != 0 || !strings.HasPrefix(string(r.GetStdout()), "started") {
			t.Fatalf("timed_out %v exit %d stdout %q stderr %q", r.GetTimedOut(), r.GetExitCode(), r.GetStdout(), r.GetStderr())
		}
		if pids := tagged(tag + "-child"); len(pids) != 1 {
			t.Fatalf("background child processes %v, want one still running", pids)
		}
	})

	t.Run("file ops with Windows paths", func(t *testing.T) {
		ctx := ctxT(t)
		content := []byte("line one\r\nline two ü\n")
		drive := winPath(root) + `\dir\a.txt` // drive letter and backslashes
		if _, err := s.WriteFile(ctx, drive, content, nil); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(root, "dir", "a.txt")); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("written file on disk: %q %v", got, err)
		}
		for _, p := range []string{"dir/a.txt", `dir\a.txt`, drive, root + "/dir/a.txt"} { // relative, and "/x" on the current drive
			if got, err := s.ReadFile(ctx, p, 0); err != nil || !bytes.Equal(got, content) {
				t.Fatalf("read %s: %q %v", p, got, err)
			}
		}
		st, err := s.Stat(ctx, `dir\a.txt`)
		if err != nil || !st.GetExists() || st.GetEntry().GetSize() != uint64(len(content)) || st.GetEntry().GetName() != "a.txt" {
			t.Fatalf("stat: %v %v", st, err)
		}
		ents, err := s.ListDir(ctx, winPath(root)+`\dir`)
		if err != nil || len(ents) != 1 || ents[0].Name != "a.txt" {
			t.Fatalf("list: %+v %v", ents, err)
		}
		if err := s.Move(ctx, `dir\a.txt`, `dir\b.txt`, false); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(root, "dir", "b.txt")); err != nil {
			t.Fatalf("moved file: %v", err)
		}
		if _, err := os.Stat(filepath.Join(root, "dir", "a.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("move left the source: %v", err)
		}
		if err := s.Remove(ctx, `dir\b.txt`, false); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(root, "dir", "b.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("removed file: %v", err)
		}
		if err := s.Mkdir(ctx, `deep\x\y`, true, 0); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(root, "deep", "x", "y")); err != nil || !fi.IsDir() {
			t.Fatalf("mkdir -p: %v", err)
		}
		// ~ is the Windows user's profile (C:\users\<user> in the prefix).
		name := fmt.Sprintf("og-wine-%d.txt", rand.Int())
		if _, err := s.WriteFile(ctx, `~\`+name, content, nil); err != nil {
			t.Fatal(err)
		}
		if got, err := s.ReadFile(ctx, "~/"+name, 0); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("read ~/%s: %q %v", name, got, err)
		}
		if m, _ := filepath.Glob(filepath.Join(w.prefix, "drive_c", "users", "*", name)); len(m) != 1 {
			t.Fatalf("~ file not in the prefix's user profile: %v", m)
		}
	})

	t.Run("20 MB put and get are byte-equal", func(t *testing.T) {
		ctx := ctxT(t)
		data := make([]byte, 20<<20)
		rand.NewChaCha8([32]byte{19}).Read(data)
		p := winPath(root) + `\big.bin`
		if n, err := s.WriteFileAll(ctx, p, bytes.NewReader(data), int64(len(data)), nil); err != nil || n != int64(len(data)) {
			t.Fatalf("put: %d %v", n, err)
		}
		if disk, err := os.ReadFile(filepath.Join(root, "big.bin")); err != nil || !bytes.Equal(disk, data) {
			t.Fatalf("put: the file on disk differs (%d bytes, %v)", len(disk), err)
		}
		var back bytes.Buffer
		if n, err := s.ReadFileAll(ctx, p, &back, nil); err != nil || n != int64(len(data)) || !bytes.Equal(back.Bytes(), data) {
			t.Fatalf("get: %d bytes, equal %v, %v", n, bytes.Equal(back.Bytes(), data), err)
		}
	})

	t.Run("git status from go-git equals git's, repository discovery", func(t *testing.T) {
		if _, err := exec.LookPath("git"); err != nil {
			t.Skip("git is not installed here (needed for the reference answer)")
		}
		ctx := ctxT(t)
		repo := filepath.Join(root, "repo")
		os.MkdirAll(filepath.Join(repo, "sub"), 0o755)
		gitT(t, repo, "init", "-q", "-b", "main")
		os.WriteFile(filepath.Join(repo, "tracked.txt"), []byte("one\n"), 0o644)
		os.WriteFile(filepath.Join(repo, "sub", "gone.txt"), []byte("x\n"), 0o644)
		gitT(t, repo, "add", ".")
		gitT(t, repo, "commit", "-qm", "first")
		os.WriteFile(filepath.Join(repo, "tracked.txt"), []byte("one\ntwo\n"), 0o644)
		os.Remove(filepath.Join(repo, "sub", "gone.txt"))
		os.WriteFile(filepath.Join(repo, "staged.txt"), []byte("s\n"), 0o644)
		gitT(t, repo, "add", "staged.txt")
		os.WriteFile(filepath.Join(repo, "new file ü.txt"), []byte("x"), 0o644)

		// The raw op: go-git's porcelain v2 against git's, byte for byte.
		want := gitOut(t, repo, "status", "--porcelain=v2", "--branch")
		resp, err := s.Git(ctx, agentpb.GitOp_GIT_OP_STATUS, "repo")
		if err != nil || resp.GetExitCode() != 0 {
			t.Fatalf("git op status: %v %v", resp, err)
		}
		if string(resp.GetStdout()) != want {
			t.Fatalf("go-git status:\n%s\ngit status:\n%s", resp.GetStdout(), want)
		}
		// The structured service (relay ctl git status): exec finds no git
		// on this machine and falls back to the git op.
		wantSt, err := gitsvc.New(linuxRunner{}, gitsvc.Options{WorkspaceRoot: root}).Status(ctx, "repo")
		if err != nil {
			t.Fatal(err)
		}
		gotSt, err := gitsvc.New(gitsvc.SessionRunner(s), gitsvc.Options{}).Status(ctx, "repo")
		if err != nil || !reflect.DeepEqual(gotSt, wantSt) {
			t.Fatalf("gitsvc status on Windows = %+v, %v\nwant (git on Linux) %+v", gotSt, err, wantSt)
		}
		// Discovery: find.exe is not find; the service walks the directories.
		repos, err := gitsvc.New(gitsvc.SessionRunner(s), gitsvc.Options{}).DetectRepos(ctx)
		if err != nil || !reflect.DeepEqual(repos, []string{"repo"}) {
			t.Fatalf("repositories on Windows: %q, %v; want [repo]", repos, err)
		}
	})

	t.Run("service definitions print", func(t *testing.T) {
		exe := regexp.QuoteMeta(winPath(w.agent))
		out := w.run(t, root, nil, 0, "service", "install", "--print")
		if !regexp.MustCompile(`<Command>`+exe+`</Command>`).MatchString(out) || !strings.Contains(out, "<Arguments>run --log-file ") {
			t.Fatalf("user task definition:\n%s", out)
		}
		out = w.run(t, root, nil, 0, "service", "install", "--system", "--print")
		if !regexp.MustCompile(`sc.exe create OpengeniAgent binPath= "(\\")?`+exe+`(\\")? run`).MatchString(out) || !strings.Contains(out, "restart/5000") {
			t.Fatalf("system service definition:\n%s", out)
		}
	})

	t.Run("pairing, config store and instance lock", func(t *testing.T) { w.pairing(t) })

	t.Run("recursive remove", func(t *testing.T) {
		ctx := ctxT(t)
		os.MkdirAll(filepath.Join(root, "tree", "a", "b"), 0o755)
		os.WriteFile(filepath.Join(root, "tree", "a", "b", "f"), []byte("x"), 0o644)
		err := s.Remove(ctx, "tree", true)
		if _, serr := os.Stat(filepath.Join(root, "tree")); err != nil && serr == nil {
			t.Skipf("not carried by wine 8 (os.RemoveAll needs a file information class wine lacks): %v", err)
		}
		if err != nil || !errors.Is(func() error { _, e := os.Stat(filepath.Join(root, "tree")); return e }(), os.ErrNotExist) {
			t.Fatalf("recursive remove: %v", err)
		}
	})
	t.Run("ConPTY terminal I/O", func(t *testing.T) {
		t.Skip("not carried by wine 8: cmd.exe in a pseudo console produces no output, so terminals are untested on Windows")
	})
	t.Run("service manager runtime", func(t *testing.T) {
		t.Skip("not carried by wine 8: the SCM service and the scheduled task register but never run the agent, so install/start/stop/status are untested on Windows")
	})

	t.Run("file ACLs and permissions", func(t *testing.T) {
		t.Skip("not carried by wine: it maps files onto Unix permissions and enforces no Windows ACLs, so permission errors are untested on Windows")
	})

	t.Run("Ctrl-C announces GoingOffline", func(t *testing.T) {
		if err := ag.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		off := nextGoingOffline(t, events)
		if off.GetReason() != agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP {
			t.Fatalf("going offline: %v", off)
		}
		if err := ag.wait(60 * time.Second); err != nil {
			t.Fatalf("agent exit after Ctrl-C: %v\n%s", err, ag.out.String())
		}
	})
}

// pairing connects the Windows agent to a dev platform with an enroll
// token, serves the stored connection, and checks the instance lock.
func (w *wineEnv) pairing(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	p, err := devstack.StartPlatform(ctx, devstack.PlatformOptions{DataDir: filepath.Join(dir, "platform"), NATSPort: -1, HTTPPort: -1, Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	var mint enroll.MintResponse
	if err := p.AdminDo(ctx, http.MethodPost, "/v1/workspaces/"+p.WorkspaceID()+"/enrollments/token", map[string]any{}, &mint); err != nil {
		t.Fatal(err)
	}
	cfgDir := filepath.Join(dir, "cfg")
	env := []string{"OPENGENI_CONFIG_DIR=" + winPath(cfgDir), "OPENGENI_ENROLL_TOKEN=" + mint.Token}
	out := w.run(t, dir, env, 0, "connect", "--api-url", p.APIURL(), "--non-interactive")
	if !strings.Contains(out, "Enrolled.") {
		t.Fatalf("connect output:\n%s", out)
	}
	// The Windows agent's config store, read on Linux.
	conns, err := config.NewStore(cfgDir).List()
	if err != nil || len(conns) != 1 || conns[0].Creds == nil || conns[0].Creds.WorkspaceID != p.WorkspaceID() {
		t.Fatalf("stored connections: %+v %v", conns, err)
	}
	creds := conns[0].Creds
	if out := w.run(t, dir, env, 0, "connections"); !strings.Contains(out, creds.AgentID) {
		t.Fatalf("connections:\n%s", out)
	}

	ag := w.start(t, dir, env, "run")
	rpc := control.NewNATSRPC(p.ControlConnFactory())
	t.Cleanup(rpc.Close)
	s := wineSession(t, rpc, p.WorkspaceID(), creds.AgentID, ag)
	if r := execOK(t, s, control.ExecRequestOptions{Argv: []string{"cmd", "/C", "exit 5"}}); r.GetExitCode() != 5 {
		t.Fatalf("exec over the paired connection: exit %d", r.GetExitCode())
	}

	// A second agent on the same connection is turned away by the lock
	// (exit 0: nothing is wrong, the machine is served).
	out = w.run(t, dir, env, 0, "run")
	if !regexp.MustCompile(`already running \(pid \d+\)`).MatchString(out) {
		t.Fatalf("second run on a held connection:\n%s", out)
	}
	if !s.Ping(ctx) {
		t.Fatal("the first agent stopped answering")
	}
	if err := ag.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := ag.wait(60 * time.Second); err != nil {
		t.Fatalf("paired agent exit: %v\n%s", err, ag.out.String())
	}
}

// wineEnv is a wine prefix ready for Go binaries, and the Windows builds.
type wineEnv struct {
	loader, server string // wine64 and wineserver
	prefix         string
	env            []string // for every wine process
	agent, helper  string   // agent.exe, winhelper.exe
	bin            string   // where the builds are
}

// setupWine builds the Windows binaries while it creates a wine prefix with
// the ProcessPrng stand-in, both once per run.
func setupWine(t *testing.T) *wineEnv {
	t.Helper()
	dir := t.TempDir()
	w := &wineEnv{loader: lookTool(t, "wine64", "/usr/lib/wine/wine64"), server: lookTool(t, "wineserver", "/usr/lib/wine/wineserver"),
		prefix: filepath.Join(dir, "prefix"), bin: filepath.Join(dir, "bin")}
	dlltool := lookTool(t, "x86_64-w64-mingw32-dlltool", "")
	ld := lookTool(t, "x86_64-w64-mingw32-ld", "")
	home := filepath.Join(dir, "home") // wine links user folders under $HOME
	os.MkdirAll(home, 0o755)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DISPLAY", "WAYLAND_DISPLAY", "HOME", "WINEPREFIX", "WINEDEBUG", "WINEDLLOVERRIDES", "OPENGENI_CONFIG_DIR", "XDG_CONFIG_HOME":
			continue
		}
		w.env = append(w.env, kv)
	}
	w.env = append(w.env, "WINEPREFIX="+w.prefix, "WINEDEBUG=-all", "WINEDLLOVERRIDES=mscoree,mshtml=", "HOME="+home)
	// Kill this prefix's wine processes (all started here) before the
	// directory goes.
	t.Cleanup(func() {
		cmd := exec.Command(w.server, "-k")
		cmd.Env = w.env
		_ = cmd.Run()
	})

	var wg sync.WaitGroup
	var buildErr error
	wg.Go(func() { buildErr = w.build() })
	start := time.Now()
	boot := exec.Command(w.loader, "wineboot", "--init")
	boot.Env = w.env
	if out, err := boot.CombinedOutput(); err != nil {
		wg.Wait()
		t.Fatalf("wineboot: %v\n%s", err, out)
	}
	waitServer := exec.Command(w.server, "-w")
	waitServer.Env = w.env
	_ = waitServer.Run()
	t.Logf("wine prefix created in %v", time.Since(start).Round(100*time.Millisecond))

	sys32 := filepath.Join(w.prefix, "drive_c", "windows", "system32")
	if _, err := os.Stat(filepath.Join(sys32, "bcryptprimitives.dll")); err == nil {
		t.Log("this wine ships bcryptprimitives.dll: the ProcessPrng stand-in is not needed")
	} else {
		exp := filepath.Join(dir, "bcryptprimitives.exp")
		dll := filepath.Join(sys32, "bcryptprimitives.dll")
		for _, c := range [][]string{
			{dlltool, "-d", filepath.Join("testdata", "bcryptprimitives.def"), "-D", "bcryptprimitives.dll", "-e", exp},
			{ld, "-shared", "-o", dll, exp},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", c, err, out)
			}
		}
		t.Log("wine lacks bcryptprimitives.dll: installed the ProcessPrng stand-in")
	}
	wg.Wait()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return w
}

// build cross-compiles the agent, the helper and the Windows package tests.
func (w *wineEnv) build() error {
	w.agent, w.helper = filepath.Join(w.bin, "opengeni-agent.exe"), filepath.Join(w.bin, "winhelper.exe")
	for _, args := range [][]string{
		{"build", "-o", w.agent, "./cmd/opengeni-agent"},
		{"build", "-o", w.helper, "./e2e/testdata/winhelper"},
		{"test", "-c", "-o", filepath.Join(w.bin, "exec.test.exe"), "./agent/exec"},
		{"test", "-c", "-o", filepath.Join(w.bin, "service.test.exe"), "./agent/service"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// packageTests runs a Windows test binary's TestWindows* tests under wine.
func (w *wineEnv) packageTests(t *testing.T, bin string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(w.loader, filepath.Join(w.bin, bin), "-test.run", "^TestWindows", "-test.v", "-test.count", "1")
	cmd.Dir, cmd.Env = dir, w.env
	out, err := cmd.CombinedOutput()
	t.Logf("%s under wine:\n%s", bin, out)
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	passed := regexp.MustCompile(`(?m)^--- PASS: TestWindows`).FindAll(out, -1)
	if len(passed) == 0 || bytes.Contains(out, []byte("--- SKIP")) || bytes.Contains(out, []byte("--- FAIL")) {
		t.Fatalf("%s: want only passing TestWindows* tests", bin)
	}
}

// wineProc is a Windows program running under wine.
type wineProc struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan error
}

// start runs the agent with args in dir (its working directory, so its
// workspace root); it is killed at cleanup if still running.
func (w *wineEnv) start(t *testing.T, dir string, env []string, args ...string) *wineProc {
	t.Helper()
	cmd := exec.Command(w.loader, append([]string{w.agent}, args...)...)
	cmd.Dir, cmd.Env = dir, append(append([]string(nil), w.env...), env...)
	p := &wineProc{cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.wait(0) == errStillRunning {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("agent %v output:\n%s", args, p.out.String())
		}
	})
	return p
}

var errStillRunning = errors.New("still running")

// wait waits up to d for the process to exit and returns how it ended.
func (p *wineProc) wait(d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(d):
		return errStillRunning
	}
}

// run runs the agent to completion and checks its exit code; it returns
// the combined output.
func (w *wineEnv) run(t *testing.T, dir string, env []string, wantExit int, args ...string) string {
	t.Helper()
	p := w.start(t, dir, env, args...)
	err := p.wait(2 * time.Minute)
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("opengeni-agent %v: %v", args, err)
	}
	if code != wantExit {
		t.Fatalf("opengeni-agent %v: exit %d, want %d\n%s", args, code, wantExit, p.out.String())
	}
	return p.out.String()
}

// wineSession waits until the agent answers and returns a session to it.
func wineSession(t *testing.T, rpc control.RPC, ws, agentID string, ag *wineProc) *control.Session {
	t.Helper()
	s, err := control.NewSession(control.SessionConfig{WorkspaceID: ws, AgentID: agentID, RPC: rpc, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 90*time.Second, func() error {
		if err := ag.wait(0); err != errStillRunning {
			t.Fatalf("the agent exited: %v\n%s", err, ag.out.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if !s.Ping(ctx) {
			return errors.New("no ping answer yet")
		}
		return nil
	})
	return s
}

func execOK(t *testing.T, s *control.Session, o control.ExecRequestOptions) *agentpb.ExecResponse {
	t.Helper()
	r, err := s.ExecArgs(ctxT(t), o)
	if err != nil {
		t.Fatalf("exec %q: %v", o.Argv, err)
	}
	return r
}

// winPath is a Linux path as wine shows it to Windows programs.
func winPath(p string) string { return "Z:" + strings.ReplaceAll(p, "/", `\`) }

func lookTool(t *testing.T, name, fallback string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if fallback != "" {
		if _, err := os.Stat(fallback); err == nil {
			return fallback
		}
	}
	t.Fatalf("%s not found: install wine64 and binutils-mingw-w64-x86-64", name)
	return ""
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// tagged lists the pids of processes whose command line holds tag.
func tagged(tag string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Contains(b, []byte(tag)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killTagged kills the processes this test started with tag.
func killTagged(tag string) {
	for _, pid := range tagged(tag) {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

// linuxRunner runs commands on this machine for the reference answer.
type linuxRunner struct{}

func (linuxRunner) Run(ctx context.Context, workdir string, argv []string) ([]byte, []byte, int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = workdir
	cmd.Env = gitEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return stdout.Bytes(), stderr.Bytes(), ee.ExitCode(), nil
	}
	return stdout.Bytes(), stderr.Bytes(), 0, err
}

func gitEnv() []string { return append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null") }

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, gitEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return string(out)
}

// subscribeEvents delivers the machine's AgentEvents.
func subscribeEvents(t *testing.T, url, ws, agentID string) chan *nats.Msg {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ch := make(chan *nats.Msg, 256)
	if _, err := nc.ChanSubscribe(subject.Of(ws, agentID, "events"), ch); err != nil {
		t.Fatal(err)
	}
	return ch
}

// nextGoingOffline skips heartbeats to the GoingOffline event.
func nextGoingOffline(t *testing.T, ch chan *nats.Msg) *agentpb.GoingOffline {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m := <-ch:
			var ev agentpb.AgentEvent
			if err := proto.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			if off := ev.GetGoingOffline(); off != nil {
				return off
			}
		case <-timeout:
			t.Fatal("no GoingOffline within 60s")
		}
	}
}

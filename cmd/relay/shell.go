package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/devstack"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

const envRelayURL = "OPENGENI_RELAY_URL"

// shell opens an interactive terminal on the machine through the relay:
// pty_open, a viewer token, the relay as a CLIENT; the local terminal in raw
// mode; stdin → input frames, output frames → stdout, SIGWINCH → pty_resize.
// When the remote process exits (or the stream ends), the terminal is
// restored, the pty closed and its exit code returned.
func (e *ctlEnv) shell(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("shell", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	relayURL := fs.String("relay", "", "relay URL viewers dial (env "+envRelayURL+"; default: the running `relay dev`'s)")
	secretFile := fs.String("viewer-secret-file", "", "file holding the relay's stream-token secret (default: env "+
		control.EnvStreamSecret+", then the running `relay dev`'s)")
	cwd := fs.String("cwd", "", "working directory on the machine")
	fs.Usage = func() {
		fmt.Fprint(e.stderr, "Usage: relay ctl [flags] shell [flags] [-- CMD ARGS...]\n\nAn interactive terminal on the machine through the relay (default: its shell).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, nil
	}
	url, secret, err := viewerConfig(e.dataDir, *relayURL, *secretFile)
	if err != nil {
		return 2, err
	}
	sess := e.sess.WithRelay(control.ParseRelayURL(url))

	inFd, outFd := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	interactive := term.IsTerminal(inFd) && term.IsTerminal(outFd)
	var cols, rows uint32
	if interactive {
		if w, h, err := term.GetSize(outFd); err == nil {
			cols, rows = uint32(w), uint32(h)
		}
	}
	t, err := sess.OpenTerminal(ctx, control.TerminalOptions{
		PtyOptions: control.PtyOptions{
			Command: fs.Args(), Cwd: *cwd, Cols: cols, Rows: rows, Term: os.Getenv("TERM"),
		},
		StreamSecret: secret,
	})
	if err != nil {
		return 1, err
	}

	restore := func() {}
	if interactive {
		if old, err := term.MakeRaw(inFd); err == nil {
			restore = func() { term.Restore(inFd, old) }
		}
	}
	stopWinch := notifyResize(func() {
		w, h, err := term.GetSize(outFd)
		if err != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		t.Resize(rctx, uint32(w), uint32(h))
	})

	// stdin → the terminal. The reader goroutine outlives the session (a
	// blocked Read cannot be cancelled); the process exits soon after.
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := os.Stdin.Read(buf)
			if n > 0 {
				// Send encodes the frame before it returns: buf is reusable.
				if t.Send(ctx, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				if !interactive {
					// Piped input ended: ^D, the terminal's end of input.
					t.Send(ctx, []byte{4})
				}
				return
			}
		}
	}()

	// The terminal → stdout, until the process exits or we are stopped.
	out := t.Output()
loop:
	for {
		select {
		case b, ok := <-out:
			if !ok {
				break loop
			}
			e.stdout.Write(b)
		case <-ctx.Done():
			break loop
		}
	}
	stopWinch()
	restore()

	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	code, cerr := t.Close(cctx)
	if serr := t.Stream.Err(); serr != nil {
		// The process's own end is no news; any other end (a newer viewer
		// took over, the relay gave up on the channel) is said.
		var closed *control.StreamClosedError
		if !errors.As(serr, &closed) || closed.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT {
			fmt.Fprintln(e.stderr, "\r\nrelay ctl shell: stream lost:", serr)
		}
	}
	if cerr != nil {
		return 1, fmt.Errorf("pty_close: %w", cerr)
	}
	fmt.Fprintf(e.stderr, "\r\n[%s exited with code %d]\r\n", t.PtyID, code)
	if code < 0 {
		return 1, nil
	}
	return int(code) & 0xff, nil
}

// viewerConfig finds the relay URL and viewer secret: flags, then env,
// then what a running `relay dev` wrote for this user.
func viewerConfig(dataDir, url, secretFile string) (string, []byte, error) {
	var secret []byte
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return "", nil, err
		}
		secret = []byte(strings.TrimSpace(string(b)))
	} else if v := os.Getenv(control.EnvStreamSecret); v != "" {
		secret = []byte(v)
	}
	if url == "" {
		url = os.Getenv(envRelayURL)
	}
	if url == "" || len(secret) == 0 {
		devURL, devSecret, err := devstack.ReadDevFiles(dataDir)
		if err == nil {
			if url == "" {
				url = devURL
			}
			if len(secret) == 0 {
				secret = devSecret
			}
		}
	}
	if len(secret) == 0 {
		return "", nil, fmt.Errorf("no viewer secret: pass -viewer-secret-file, set %s, or start `relay dev`", control.EnvStreamSecret)
	}
	if url == "" {
		url = fmt.Sprintf("ws://127.0.0.1:%d/stream", devstack.DefaultRelayPort)
	}
	return url, secret, nil
}

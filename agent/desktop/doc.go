// Package desktop serves the desktop ops of agent.md §5.8–§5.9: screenshots
// fitted to the connection's reply budget, consent-gated pointer and
// keyboard input, virtual displays (Xvfb) for headless hosts, and the
// desktop stream pump of relay.md §7.
//
// # Backends
//
//   - Linux (X11): capture and input speak the X protocol directly through
//     github.com/jezek/xgb (GetImage for capture, XTEST FakeInput for input).
//     This is pure Go, so the linux agent has full desktop support with
//     CGO_ENABLED=0, it targets an explicit display (the Xvfb that Ensure
//     started) instead of whatever $DISPLAY was at first use, and a dying X
//     server is an error, not a process exit (Xlib, and so robotgo, calls
//     exit(3) on a lost connection). kbinani/screenshot is the benchmark
//     baseline on Linux, not the backend: it reads $DISPLAY from the process
//     environment, opens a connection per call and converts pixel by pixel
//     (1.5–2.5× slower than this backend in BenchmarkScreenshot), and with
//     xgb v1.1.1 its MIT-SHM path failed every second call against Xvfb.
//     Building with -tags robotgo (and cgo) swaps the Linux injector for
//     robotgo, which is how the robotgo code path can be exercised on Linux.
//   - PNG: screenshots and frames use the encoder in fastpng.go (RGB, Sub
//     filter, klauspost/compress deflate at BestSpeed), 3–4× faster than
//     image/png at BestSpeed, which still searches five filters per row.
//   - macOS and Windows: capture through github.com/kbinani/screenshot
//     (macOS needs cgo; Windows is pure Go) and input through
//     github.com/go-vgo/robotgo (cgo). Without cgo these report desktop
//     input (and on macOS capture) unavailable with the reason. They cannot
//     be tested on the Linux CI host.
//
// # Consent
//
// Screenshots are a view op and are not gated. Every input event, from
// desktop_input or from a viewer on the stream, is gated by the Consent
// function, read on every call, so revoking screen-control consent on the
// machine takes effect on the next event without a restart. A refused
// event has no OS side effect.
//
// # Running outside the owner's graphical session
//
// Capture and input only work inside the logged-in user's graphical
// session. A system service (Windows session 0, a macOS LaunchDaemon, a
// system-wide systemd unit without the user's DISPLAY/XAUTHORITY) sees a
// black screen or no display at all. The agent reports that as
// capabilities.desktop=false with the reason (Capability), never as a
// broken screenshot.
//
// The design for a system-wide install is a per-user helper: the service
// starts (or the user's login starts) `opengeni-agent desktop-helper` in the
// user's session — a LaunchAgent on macOS, a scheduled task with "run only
// when the user is logged on" or WTSQueryUserToken+CreateProcessAsUser on
// Windows, a systemd --user unit on Linux. The helper links this package
// and serves the same three operations (screenshot, input, stream frames)
// over a local socket owned by that user (a unix socket in
// $XDG_RUNTIME_DIR or ~/Library/Application Support, a named pipe with a
// DACL for the user's SID on Windows), speaking the same protobuf messages
// length-prefixed. The service then implements the same screen/injector
// seams as a client of that socket, so dispatch, consent and the pump are
// unchanged. Consent stays in the service (it owns the enrollment); the
// helper never injects without an explicit, already-gated request. Until
// the helper exists, an agent in the wrong session reports why.
package desktop

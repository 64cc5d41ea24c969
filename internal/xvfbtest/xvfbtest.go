// Package xvfbtest runs a real X server (Xvfb) for tests and reads the
// pointer back from it.
package xvfbtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/xproto"
)

// Start runs Xvfb at w×h on a free display from first on and returns the
// display (":N") once it accepts connections; stop kills it. It fails when
// Xvfb is not installed (exec.ErrNotFound).
func Start(first, w, h int) (display string, stop func(), err error) {
	bin, err := exec.LookPath("Xvfb")
	if err != nil {
		return "", nil, err
	}
	for n := first; n < first+60; n++ {
		sock := fmt.Sprintf("/tmp/.X11-unix/X%d", n)
		if _, err := os.Stat(sock); err == nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n)); err == nil {
			continue
		}
		cmd := exec.Command(bin, fmt.Sprintf(":%d", n), "-screen", "0", fmt.Sprintf("%dx%dx24", w, h), "-nolisten", "tcp")
		if err := cmd.Start(); err != nil {
			return "", nil, err
		}
		stop := func() { cmd.Process.Kill(); cmd.Wait() }
		// Xvfb announces nothing: its socket accepting is the event.
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := net.Dial("unix", sock)
			if err == nil {
				c.Close()
				return fmt.Sprintf(":%d", n), stop, nil
			}
			if time.Now().After(deadline) {
				stop()
				return "", nil, fmt.Errorf("xvfbtest: Xvfb :%d did not come up: %w", n, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return "", nil, fmt.Errorf("xvfbtest: no free X display from :%d", first)
}

// Pointer reads the pointer's position on display.
func Pointer(display string) (x, y int, err error) {
	c, err := xgb.NewConnDisplay(display)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	p, err := xproto.QueryPointer(c, xproto.Setup(c).DefaultScreen(c).Root).Reply()
	if err != nil {
		return 0, 0, err
	}
	return int(p.RootX), int(p.RootY), nil
}

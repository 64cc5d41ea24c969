package update

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// HealthCheck runs `<bin> health` and requires it to exit 0 within timeout
// and to report wantVersion (when non-empty) on its first line
// ("opengeni-agent <version> ok"). A binary that crashes, hangs, or is not
// the build the manifest promised fails the gate.
func HealthCheck(ctx context.Context, bin, wantVersion string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "health")
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	first, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
	if len(first) > 200 {
		first = first[:200]
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %s health did not finish within %s", ErrHealthCheck, bin, timeout)
	}
	if err != nil {
		return fmt.Errorf("%w: %s health: %v (output: %q)", ErrHealthCheck, bin, err, first)
	}
	if wantVersion != "" {
		fields := strings.Fields(first)
		if len(fields) < 2 || strings.TrimPrefix(fields[1], "v") != strings.TrimPrefix(wantVersion, "v") {
			return fmt.Errorf("%w: %s reports %q, expected version %s", ErrHealthCheck, bin, first, wantVersion)
		}
	}
	return nil
}

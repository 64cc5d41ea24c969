//go:build darwin

package desktop

import "os"

// sessionProblem explains why this process cannot see the user's desktop:
// a LaunchDaemon runs as root outside any GUI session.
func sessionProblem() string {
	if os.Geteuid() == 0 && os.Getenv("HOME") == "" {
		return "the agent runs as a LaunchDaemon (no GUI session); run it as a LaunchAgent in the user's session or through the desktop helper"
	}
	return ""
}

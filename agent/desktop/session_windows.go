//go:build windows

package desktop

import "golang.org/x/sys/windows"

// sessionProblem explains why this process cannot see the user's desktop:
// services run in session 0, which has no interactive display.
func sessionProblem() string {
	var sid uint32
	if err := windows.ProcessIdToSessionId(windows.GetCurrentProcessId(), &sid); err == nil && sid == 0 {
		return "the agent runs in session 0 (a Windows service) and cannot see the user's desktop; run it in the user's session (per-user task) or through the desktop helper"
	}
	return ""
}

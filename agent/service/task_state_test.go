package service

import "testing"

// TestTaskStateOf: the per-user task's status comes from the Task
// Scheduler's TASK_STATE number, never from schtasks' localized text.
func TestTaskStateOf(t *testing.T) {
	tests := []struct {
		installed bool
		state     int
		want      State
	}{
		{false, taskStateRunning, State{Detail: "not installed"}},
		{true, taskStateRunning, State{Installed: true, Running: true, Detail: "running"}},
		{true, taskStateReady, State{Installed: true, Detail: "ready"}},
		{true, taskStateDisabled, State{Installed: true, Detail: "disabled"}},
		{true, taskStateQueued, State{Installed: true, Detail: "queued"}},
		{true, taskStateUnknown, State{Installed: true, Detail: "state unknown"}},
		{true, 9, State{Installed: true, Detail: "state 9"}},
	}
	for _, tt := range tests {
		if got := taskStateOf(tt.installed, tt.state); got != tt.want {
			t.Errorf("taskStateOf(%v, %d) = %+v, want %+v", tt.installed, tt.state, got, tt.want)
		}
	}
}

//go:build unix && !linux

package proctree

import osexec "os/exec"

// startCmd is a plain Start: no Pdeathsig here; the guard alone ends the
// group, so a death between fork and registration can leave the command.
func startCmd(cmd *osexec.Cmd) error { return cmd.Start() }

package control

import "strings"

// VirtualRoot is the path the platform shows as the machine's workspace
// ("/workspace"); [MachinePath] maps it onto the session's working directory.
const VirtualRoot = "/workspace"

// MachinePath maps a platform path onto the path sent to the machine
// (control.md §1.2). base is workingDir minus one trailing "/":
//
//  1. "" or exactly "/workspace"        -> base ("" = the agent's workspace root)
//  2. "/workspace/<rel>"               -> base + "/" + rel, or rel when base is ""
//  3. any other absolute "/..." path   -> unchanged ("/tmp", "/workspaceX")
//  4. a bare relative path             -> base + "/" + p, or p when base is ""
//
// The agent resolves relative results under its workspace root.
func MachinePath(p, workingDir string) string {
	base := strings.TrimSuffix(workingDir, "/")
	switch {
	case p == "" || p == VirtualRoot:
		return base
	case strings.HasPrefix(p, VirtualRoot+"/"):
		return join(base, p[len(VirtualRoot)+1:])
	case strings.HasPrefix(p, "/"):
		return p
	default:
		return join(base, p)
	}
}

func join(base, rel string) string {
	if base == "" {
		return rel
	}
	return base + "/" + rel
}

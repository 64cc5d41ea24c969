package fs

// isRoot: the unix-only tests that need it do not build on Windows; file
// permissions there are ACLs the tests do not set up.
func isRoot() bool { return false }

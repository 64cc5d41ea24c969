//go:build !unix

package harness

// ensureFDLimit: no descriptor limit to raise here.
func ensureFDLimit(int) (uint64, error) { return 0, nil }

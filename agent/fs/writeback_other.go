//go:build !linux

package fs

import "os"

// startWriteback is a no-op where the OS has no async writeback hint; the
// fsync before the rename does all the work.
func startWriteback(*os.File) {}

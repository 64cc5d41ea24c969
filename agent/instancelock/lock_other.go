//go:build !unix && !windows

package instancelock

import "os"

// Platforms without a lock primitive run unlocked (fail-open, like the
// reference on Windows).
func tryLock(*os.File) (bool, error) { return false, nil }

func unlock(*os.File) error { return nil }

func processAlive(int) bool { return false }

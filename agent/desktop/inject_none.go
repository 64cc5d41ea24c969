//go:build !linux && !(cgo && (darwin || windows))

package desktop

import (
	"errors"
	"runtime"
)

// newInjector: without cgo there is no input backend on this platform
// (robotgo needs cgo).
func newInjector(screen) (injector, error) {
	return nil, errors.New("this agent was built without cgo, and desktop input on " + runtime.GOOS + " needs a cgo build (robotgo)")
}

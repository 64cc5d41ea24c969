package agent

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/opengeni/opengeni-agent/internal/proctree"
)

// TestMain fails the package's tests if any goroutine outlives them, but
// for the exec guard's, which live as long as the process on purpose.
func TestMain(m *testing.M) {
	var opts []goleak.Option
	for _, f := range proctree.BackgroundFuncs {
		opts = append(opts, goleak.IgnoreAnyFunction(f))
	}
	goleak.VerifyTestMain(m, opts...)
}

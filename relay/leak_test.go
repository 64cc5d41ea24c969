package relay

import (
	"fmt"
	"os"

	"go.uber.org/goleak"
)

// checkNoLeaks fails the run if any goroutine outlives the tests: first the
// relay's own (with their stacks), then anything goleak finds.
func checkNoLeaks() int {
	if code := checkNoServerGoroutines(); code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		return 1
	}
	return 0
}

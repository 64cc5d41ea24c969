//go:build !unix && !windows

package capture

import "os"

func pipeStateOf(*os.File) pipeState { return pipeUnknown }

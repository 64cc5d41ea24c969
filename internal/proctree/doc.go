// Package killdrop ends a command's process tree when the process that
// started it dies, even by SIGKILL ("kill-on-drop").
//
// On unix every command runs in its own process group (the caller sets
// Setpgid). Start lists that group in a table, an unlinked file shared with
// a guard: one small helper process per agent, the agent's own binary
// re-executed (see the init dispatch in guard_unix.go), which blocks on a
// pipe whose write end only the agent holds. When the agent dies, however
// it dies, the kernel closes that end; the guard reads EOF, sends SIGKILL to
// every group the table still lists and exits. Nothing depends on which
// thread forked what, and an exec costs two pwrites to the table, not an
// extra process or a wake-up of the guard.
//
// On Linux the command itself also gets Pdeathsig SIGKILL, forked from an
// OS thread locked for the life of the process (Pdeathsig fires when the
// forking thread exits, https://go.dev/issue/27505). That covers the moment
// between the fork and the registration reaching the guard.
//
// macOS and the BSDs get the guard without Pdeathsig. On Windows the
// caller uses job objects with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE instead;
// Start is a plain cmd.Start there.
package killdrop

// BackgroundFuncs are the functions of the goroutines this package keeps for
// the life of the process (the spawner thread, the guard's watcher), for
// leak checkers such as goleak.IgnoreAnyFunction.
var BackgroundFuncs = []string{
	"github.com/opengeni/opengeni-agent/internal/killdrop.spawner",
	"github.com/opengeni/opengeni-agent/internal/killdrop.(*guard).watch",
}

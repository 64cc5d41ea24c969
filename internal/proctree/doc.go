// Package proctree runs a command as the root of its own process tree and
// ends that tree as a whole: the one implementation of process groups, job
// objects, tree kill and kill-with-grace for the agent (exec, git, pty,
// Xvfb).
//
// On unix the command leads its own process group (Setpgid, or Setsid for a
// new session); signals go to the group (kill(-pgid)), so grandchildren get
// them too. On Windows the command is assigned to a job object right after
// it starts; children inherit the job, and terminating it ends the tree
// (taskkill /T is the fallback when the job could not be set up).
//
// Kill-on-drop (Options.KillOnDrop) ends the tree when this process dies,
// even by SIGKILL, until Release. On Windows the job has
// JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE and its handle is this process's alone,
// so Windows closes it, killing the tree, when the process dies. On unix
// Start lists the group in a table, an unlinked file shared with a guard:
// one small helper process per agent, the agent's own binary re-executed
// (see the init dispatch in guard_unix.go), which blocks on a pipe whose
// write end only the agent holds. When the agent dies, however it dies, the
// kernel closes that end; the guard reads EOF, sends SIGKILL to every group
// the table still lists and exits. Nothing depends on which thread forked
// what, and a start costs two pwrites to the table, not an extra process or
// a wake-up of the guard.
//
// On Linux a guarded command also gets Pdeathsig SIGKILL, forked from an OS
// thread locked for the life of the process (Pdeathsig fires when the
// forking thread exits, https://go.dev/issue/27505). That covers the moment
// between the fork and the registration reaching the guard. macOS and the
// BSDs get the guard without Pdeathsig.
package proctree

// BackgroundFuncs are the functions of the goroutines this package keeps for
// the life of the process (the spawner thread, the guard's watcher), for
// leak checkers such as goleak.IgnoreAnyFunction.
var BackgroundFuncs = []string{
	"github.com/opengeni/opengeni-agent/internal/proctree.spawner",
	"github.com/opengeni/opengeni-agent/internal/proctree.(*guard).watch",
}

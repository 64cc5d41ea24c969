package metrics

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// headroom is (the soft RLIMIT_NOFILE minus this process's open files,
// the host's pid space minus its live tasks), read from /proc.
func headroom() (fds, pids uint64) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		if open, err := countDir("/proc/self/fd"); err == nil && lim.Cur > open {
			fds = lim.Cur - open
		}
	}
	if max, err := readUint("/proc/sys/kernel/pid_max"); err == nil {
		if threads, err := readUint("/proc/sys/kernel/threads-max"); err == nil {
			max = min(max, threads)
		}
		if live, err := liveTasks(); err == nil && max > live {
			pids = max - live
		}
	}
	return fds, pids
}

func countDir(dir string) (uint64, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return uint64(len(names)), err
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// liveTasks is the number of tasks (threads) on the host: the 4th field of
// /proc/loadavg is "running/total".
func liveTasks() (uint64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0, os.ErrInvalid
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, os.ErrInvalid
	}
	return strconv.ParseUint(total, 10, 64)
}

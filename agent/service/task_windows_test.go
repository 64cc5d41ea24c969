package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWindowsQueryTask registers a scheduled task with schtasks.exe and
// reads it back through the Task Scheduler's COM API (runs on Windows, and
// under wine in e2e TestWindowsUnderWine).
func TestWindowsQueryTask(t *testing.T) {
	ctx := context.Background()
	name := fmt.Sprintf("OpengeniAgentTest%d", os.Getpid())

	installed, _, err := queryTask(ctx, name)
	if err != nil || installed {
		t.Fatalf("before create: installed %v, err %v", installed, err)
	}

	dir, err := os.MkdirTemp("", "ogtask")
	if err != nil {
		t.Fatal(err)
	}
	xmlPath := filepath.Join(dir, "task.xml")
	defer func() { os.Remove(xmlPath); os.Remove(dir) }() // not RemoveAll: wine 8 lacks it
	o := Options{BinaryPath: `C:\windows\system32\cmd.exe`, Args: []string{"/C", "exit 0"}, Home: dir, Getenv: os.Getenv}
	if err := os.WriteFile(xmlPath, utf16File(string(renderTask(o).Content)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := ExecRunner(ctx, "schtasks.exe", "/Create", "/TN", name, "/XML", xmlPath, "/F"); err != nil {
		t.Fatalf("schtasks /Create: %v %s", err, out)
	}
	t.Cleanup(func() { ExecRunner(ctx, "schtasks.exe", "/Delete", "/TN", name, "/F") })

	installed, state, err := queryTask(ctx, name)
	if err != nil || !installed {
		t.Fatalf("after create: installed %v, state %d, err %v", installed, state, err)
	}
	if state < taskStateUnknown || state > taskStateRunning {
		t.Fatalf("state %d is not a TASK_STATE", state)
	}
	t.Logf("task state %d (%s)", state, taskStateOf(installed, state).Detail)

	if out, err := ExecRunner(ctx, "schtasks.exe", "/Delete", "/TN", name, "/F"); err != nil {
		t.Fatalf("schtasks /Delete: %v %s", err, out)
	}
	if installed, _, err := queryTask(ctx, name); err != nil || installed {
		t.Fatalf("after delete: installed %v, err %v", installed, err)
	}
}

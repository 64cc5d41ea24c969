// Command winhelper is a small Windows program that TestWindowsUnderWine
// runs through the agent: a program that prints, one that sleeps, one that leaves a
// background child behind, one that starts a child and waits. Every
// process carries a tag in its command line so the test can find it.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: winhelper print|sleep|background|tree <tag>")
		os.Exit(2)
	}
	mode, tag := os.Args[1], os.Args[2]
	switch mode {
	case "print": // print <tag>: write tag to stdout
		fmt.Print(tag)
	case "sleep": // sleep <tag>: a minute
		time.Sleep(time.Minute)
	case "background": // background <tag>: start a sleeping child that keeps stdout, exit 0
		child := exec.Command(os.Args[0], "sleep", tag+"-child")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("started", child.Process.Pid)
	case "tree": // tree <tag> <marker>: start a sleeping child, write marker, sleep
		child := exec.Command(os.Args[0], "sleep", tag+"-child")
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := os.WriteFile(os.Args[3], []byte("started"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		time.Sleep(time.Minute)
	default:
		os.Exit(2)
	}
}

//go:build windows

package main

// notifyResize: Windows consoles have no SIGWINCH; the size is sent once at open.
func notifyResize(func()) (stop func()) { return func() {} }

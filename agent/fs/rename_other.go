//go:build unix && !linux && !darwin

package fs

func renameNoReplace(from, to string) error { return renameChecked(from, to) }

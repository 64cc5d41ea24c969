package update

import (
	"os"
	"time"
)

// The update marker tells a running agent that the stop it is about to get
// is for an update, so it announces GoingOffline UPDATE instead of
// USER_STOP. The updater writes it beside the binary right before it
// restarts the service and removes it afterwards; a stale marker older than
// markerTTL is ignored.
const markerTTL = 2 * time.Minute

// MarkerPath is the update marker of the binary at exe.
func MarkerPath(exe string) string { return exe + ".updating" }

// WriteMarker records that exe is being restarted for an update to version.
func WriteMarker(exe, version string) error {
	return os.WriteFile(MarkerPath(exe), []byte(version+"\n"), 0o644)
}

// RemoveMarker deletes the marker (missing is fine).
func RemoveMarker(exe string) { _ = os.Remove(MarkerPath(exe)) }

// UpdatePending reports whether a fresh update marker exists for exe.
func UpdatePending(exe string) bool {
	st, err := os.Stat(MarkerPath(exe))
	return err == nil && time.Since(st.ModTime()) < markerTTL
}

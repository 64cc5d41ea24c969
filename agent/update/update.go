// Package update keeps the agent current without ever bricking it
// (agent.md §7): it fetches the channel manifest, verifies its minisign
// signature against the pinned key, gates on semver (never a downgrade,
// never below min_supported) and on the staged-rollout cohort, downloads
// and verifies the artifact (minisign, then sha256), swaps it in atomically
// keeping the prior binary as <bin>.previous, runs the new binary as a
// health gate and rolls back when it fails.
//
// The package has no opinion about how the running agent is drained or
// restarted: Options.Drain and Options.Restart are the seams the caller
// wires (update_may_proceed, GoingOffline UPDATE, the service manager).
package update

import (
	"errors"
	"runtime"
	"strings"
)

// PublicKey is the pinned minisign public key (the base64 line) that every
// manifest and artifact must be signed with. The default is the OpenGeni
// release trust root of agent.md §7; the release tool stamps the key it
// signs with into the binary via
// -ldflags -X github.com/opengeni/opengeni-agent/agent/update.PublicKey=RW...
// There is deliberately no flag or environment variable to replace it.
var PublicKey = "RWSaqgF1EVFuci7hXvDJO7cBh2xf2k0XKhCpvl23aWKG+nMAGfZ6D2Pn"

// DefaultBaseURL is where releases are published.
const DefaultBaseURL = "https://get.opengeni.ai"

// Errors, for errors.Is. Every failure of Check or Apply wraps one of them.
var (
	ErrSignature   = errors.New("signature verification failed")
	ErrChecksum    = errors.New("checksum mismatch")
	ErrManifest    = errors.New("malformed manifest")
	ErrNoArtifact  = errors.New("no artifact for this target")
	ErrDownload    = errors.New("download failed")
	ErrHealthCheck = errors.New("post-update health check failed")
	ErrNoBackup    = errors.New("no previous binary to roll back to")
	ErrVersionGate = errors.New("version gate")
)

// Target is the release target name of this build, matching the asset
// names of the install scripts: x86_64-unknown-linux-musl,
// aarch64-unknown-linux-musl, x86_64-apple-darwin, aarch64-apple-darwin,
// x86_64-pc-windows-msvc, aarch64-pc-windows-msvc ("unknown" otherwise).
// The Go builds are static (CGO_ENABLED=0), so the musl/msvc names of the
// reference's Rust targets stay accurate for what a host can run.
func Target() string { return TargetFor(runtime.GOOS, runtime.GOARCH) }

// TargetFor maps a GOOS/GOARCH pair to its release target name.
func TargetFor(goos, goarch string) string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[goarch]
	if arch == "" {
		return "unknown"
	}
	switch goos {
	case "linux":
		return arch + "-unknown-linux-musl"
	case "darwin":
		return arch + "-apple-darwin"
	case "windows":
		return arch + "-pc-windows-msvc"
	}
	return "unknown"
}

// AssetName is the file name of a target's artifact.
func AssetName(target string) string {
	if strings.Contains(target, "-windows-") {
		return "opengeni-agent-" + target + ".exe"
	}
	return "opengeni-agent-" + target
}

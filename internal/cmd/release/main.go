// Command release cross-builds opengeni-agent for every target, signs the
// artifacts with minisign and writes the signed channel manifest:
//
//	go run ./internal/cmd/release -out dist -version 1.2.3 -key release.key
//
// The key is a minisign secret key file; an encrypted one reads its
// password from $MINISIGN_PASSWORD. The public key of that key is stamped
// into the binaries (agent/update.PublicKey) and into the published install
// scripts, so a release always pins the key that signed it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/internal/cmd/release/publish"
)

const module = "github.com/opengeni/opengeni-agent"

// platforms are the GOOS/GOARCH pairs of a release.
var platforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64", "windows/arm64"}

func main() {
	out := flag.String("out", "dist", "output directory")
	version := flag.String("version", "", "release version (semver, no leading v); required")
	keyFile := flag.String("key", "", "minisign secret key file; required (password in $MINISIGN_PASSWORD if encrypted)")
	channel := flag.String("channel", "stable", "update channel of the manifest")
	minSupported := flag.String("min-supported", "0.0.0", "manifest min_supported")
	rollout := flag.Int("rollout", 100, "manifest rollout_percent (0-100)")
	salt := flag.String("salt", "", "manifest cohort_salt (default v<version>)")
	notes := flag.String("notes-url", "", "manifest notes_url")
	baseURL := flag.String("base-url", "", "absolute base URL for artifact URLs in the manifest (default: relative)")
	only := flag.String("platforms", strings.Join(platforms, ","), "comma-separated GOOS/GOARCH list")
	pkg := flag.String("pkg", "./cmd/opengeni-agent", "main package to build")
	installers := flag.String("installers", "installers", "directory with install.sh, install.ps1, uninstall.sh")
	flag.Parse()
	if *version == "" || *keyFile == "" {
		fmt.Fprintln(os.Stderr, "release: -version and -key are required")
		os.Exit(2)
	}
	if err := run(*out, *version, *keyFile, *channel, *minSupported, *rollout, *salt, *notes, *baseURL, *only, *pkg, *installers); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(out, version, keyFile, channel, minSupported string, rollout int, salt, notes, baseURL, only, pkg, installers string) error {
	key, err := publish.LoadKey(keyFile, os.Getenv("MINISIGN_PASSWORD"))
	if err != nil {
		return err
	}
	build := filepath.Join(out, ".build")
	if err := os.MkdirAll(build, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(build)
	ldflags := fmt.Sprintf("-s -w -X %s/agent.Version=%s -X %s/agent/update.PublicKey=%s", module, version, module, key.PublicKeyLine())
	arts := map[string]string{}
	for _, p := range strings.Split(only, ",") {
		goos, goarch, ok := strings.Cut(strings.TrimSpace(p), "/")
		target := update.TargetFor(goos, goarch)
		if !ok || target == "unknown" {
			return fmt.Errorf("unsupported platform %q", p)
		}
		bin := filepath.Join(build, update.AssetName(target))
		start := time.Now()
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", p, err)
		}
		st, err := os.Stat(bin)
		if err != nil {
			return err
		}
		fmt.Printf("%-28s %6.1f MB  (%s)\n", target, float64(st.Size())/(1<<20), time.Since(start).Round(time.Second))
		arts[target] = bin
	}
	r := publish.Release{
		Dir: out, Version: version, Channel: channel, MinSupported: minSupported,
		Rollout: rollout, Salt: salt, NotesURL: notes, BaseURL: baseURL,
		Artifacts: arts, Latest: true, InstallersIn: installers, Key: key,
	}
	if rollout == 0 {
		r.Rollout = -1 // publish.Release treats 0 as "default 100"
	}
	m, err := publish.Write(r)
	if err != nil {
		return err
	}
	fmt.Printf("signed %d artifacts and %s/agent/%s/manifest.json (version %s, rollout %d%%, key %s)\n",
		len(m.Artifacts), out, channel, m.Version, m.RolloutPercent, key.PublicKeyLine())
	return nil
}

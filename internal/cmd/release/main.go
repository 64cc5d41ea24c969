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
	"io"
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

// config is one release run (the flags).
type config struct {
	Out, Version, KeyFile, Channel, MinSupported string
	Rollout                                      int
	Salt, NotesURL, BaseURL                      string
	Platforms                                    []string
	Pkg, Installers                              string
}

func main() {
	var c config
	var only string
	flag.StringVar(&c.Out, "out", "dist", "output directory")
	flag.StringVar(&c.Version, "version", "", "release version (semver, no leading v); required")
	flag.StringVar(&c.KeyFile, "key", "", "minisign secret key file; required (password in $MINISIGN_PASSWORD if encrypted)")
	flag.StringVar(&c.Channel, "channel", "stable", "update channel of the manifest")
	flag.StringVar(&c.MinSupported, "min-supported", "0.0.0", "manifest min_supported")
	flag.IntVar(&c.Rollout, "rollout", 100, "manifest rollout_percent (0-100)")
	flag.StringVar(&c.Salt, "salt", "", "manifest cohort_salt (default v<version>)")
	flag.StringVar(&c.NotesURL, "notes-url", "", "manifest notes_url")
	flag.StringVar(&c.BaseURL, "base-url", "", "absolute base URL for artifact URLs in the manifest (default: relative)")
	flag.StringVar(&only, "platforms", strings.Join(platforms, ","), "comma-separated GOOS/GOARCH list")
	flag.StringVar(&c.Pkg, "pkg", "./cmd/opengeni-agent", "main package to build")
	flag.StringVar(&c.Installers, "installers", "installers", "directory with install.sh, install.ps1, uninstall.sh")
	flag.Parse()
	if c.Version == "" || c.KeyFile == "" {
		fmt.Fprintln(os.Stderr, "release: -version and -key are required")
		os.Exit(2)
	}
	c.Platforms = strings.Split(only, ",")
	if err := run(c, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

// run builds, signs and publishes; results go to stdout, and a line per
// step to progress as the step starts (a cold cross-build takes minutes).
func run(c config, stdout, progress io.Writer) error {
	began := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(progress, "release: "+format+"\n", args...) }
	key, err := publish.LoadKey(c.KeyFile, os.Getenv("MINISIGN_PASSWORD"))
	if err != nil {
		return err
	}
	build := filepath.Join(c.Out, ".build")
	if err := os.MkdirAll(build, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(build)
	ldflags := fmt.Sprintf("-s -w -X %s/agent.Version=%s -X %s/agent/update.PublicKey=%s", module, c.Version, module, key.PublicKeyLine())
	arts := map[string]string{}
	for i, p := range c.Platforms {
		p = strings.TrimSpace(p)
		goos, goarch, ok := strings.Cut(p, "/")
		target := update.TargetFor(goos, goarch)
		if !ok || target == "unknown" {
			return fmt.Errorf("unsupported platform %q", p)
		}
		bin := filepath.Join(build, update.AssetName(target))
		start := time.Now()
		say("building %s %s (%d/%d, CGO_ENABLED=0)", c.Pkg, p, i+1, len(c.Platforms))
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, c.Pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
		cmd.Stdout, cmd.Stderr = progress, progress
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", p, err)
		}
		st, err := os.Stat(bin)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-28s %6.1f MB  (%s)\n", target, float64(st.Size())/(1<<20), time.Since(start).Round(time.Second))
		arts[target] = bin
	}
	r := publish.Release{
		Dir: c.Out, Version: c.Version, Channel: c.Channel, MinSupported: c.MinSupported,
		Rollout: c.Rollout, Salt: c.Salt, NotesURL: c.NotesURL, BaseURL: c.BaseURL,
		Artifacts: arts, Latest: true, InstallersIn: c.Installers, Key: key,
		Progress: func(line string) { say("%s", line) },
	}
	if c.Rollout == 0 {
		r.Rollout = -1 // publish.Release treats 0 as "default 100"
	}
	m, err := publish.Write(r)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed %d artifacts and %s/agent/%s/manifest.json (version %s, rollout %d%%, key %s)\n",
		len(m.Artifacts), c.Out, c.Channel, m.Version, m.RolloutPercent, key.PublicKeyLine())
	say("done in %s", time.Since(began).Round(time.Second))
	return nil
}

// Package installers holds the install scripts; this test runs install.sh
// end to end (with sh and with dash) against a signed release directory
// served on loopback.
package installers

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/internal/cmd/release/publish"
	"github.com/opengeni/opengeni-agent/internal/testbin"
)

const testVersion = "7.7.7"

func TestMain(m *testing.M) {
	if runtime.GOOS == "windows" {
		os.Exit(0)
	}
	testbin.Main(m)
}

// agentBin is the agent under test (built on first use, once per run).
func agentBin(t *testing.T) string { return testbin.Agent(t, testVersion, "") }

type release struct {
	dir string
	key *publish.Key
	art string // path of this host's artifact under agent/latest
}

func newRelease(t *testing.T) *release {
	t.Helper()
	key, err := publish.LoadKey(publish.TestKeyFile(), "")
	if err != nil {
		t.Fatal(err)
	}
	r := &release{dir: t.TempDir(), key: key}
	if _, err := publish.Write(publish.Release{Dir: r.dir, Version: testVersion, Latest: true, InstallersIn: ".",
		Artifacts: map[string]string{update.Target(): agentBin(t)}, Key: key}); err != nil {
		t.Fatal(err)
	}
	r.art = filepath.Join(r.dir, "agent", "latest", update.AssetName(update.Target()))
	return r
}

func (r *release) rewriteSHA(t *testing.T) {
	data, _ := os.ReadFile(r.art)
	sum := sha256.Sum256(data)
	os.WriteFile(r.art+".sha256", []byte(hex.EncodeToString(sum[:])+"  x\n"), 0o644)
}

// toolPath builds a PATH without minisign, to exercise the openssl fallback.
func toolPath(t *testing.T, withMinisign bool) string {
	if withMinisign {
		if _, err := exec.LookPath("minisign"); err != nil {
			t.Skip("SKIP (not a pass): minisign is not installed (apt-get install minisign)")
		}
		return os.Getenv("PATH")
	}
	dir := t.TempDir()
	for _, tool := range []string{"sh", "dash", "curl", "wget", "openssl", "sha256sum", "cut", "tr", "sed", "dd", "od", "wc", "mkdir", "mktemp", "rm", "cp", "mv", "chmod", "cat", "grep", "uname"} {
		if p, err := exec.LookPath(tool); err == nil {
			os.Symlink(p, filepath.Join(dir, tool))
		}
	}
	return dir
}

type run struct {
	code   int
	stderr string
	home   string
	tmp    string
	took   time.Duration
}

func runInstall(t *testing.T, shell string, r *release, path string, env ...string) run {
	t.Helper()
	if _, err := exec.LookPath(shell); err != nil {
		t.Skipf("SKIP (not a pass): %s is not installed", shell)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(r.dir)))
	defer srv.Close()
	home, tmp := t.TempDir(), t.TempDir()
	shellPath, _ := exec.LookPath(shell)
	cmd := exec.Command(shellPath, filepath.Join(r.dir, "install.sh"))
	cmd.Env = append([]string{"HOME=" + home, "TMPDIR=" + tmp, "PATH=" + path,
		"OPENGENI_INSTALL_BASE_URL=" + srv.URL, "OPENGENI_INSTALL_NO_SERVICE=1"}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	start := time.Now()
	err := cmd.Run()
	res := run{stderr: stderr.String(), home: home, tmp: tmp, took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return res
}

func (r run) assertNothingInstalled(t *testing.T) {
	t.Helper()
	if ents, _ := os.ReadDir(filepath.Join(r.home, ".local", "bin")); len(ents) != 0 {
		t.Fatalf("left files in the install dir: %v", ents)
	}
	if ents, _ := os.ReadDir(r.tmp); len(ents) != 0 {
		t.Fatalf("left temp files: %v", ents)
	}
}

var shells = []string{"sh", "dash"}

func TestInstallGoodSignature(t *testing.T) {
	for _, shell := range shells {
		for _, withMinisign := range []bool{true, false} {
			name := shell + "/openssl"
			if withMinisign {
				name = shell + "/minisign"
			}
			t.Run(name, func(t *testing.T) {
				r := newRelease(t)
				res := runInstall(t, shell, r, toolPath(t, withMinisign))
				if res.code != 0 {
					t.Fatalf("exit %d:\n%s", res.code, res.stderr)
				}
				bin := filepath.Join(res.home, ".local", "bin", "opengeni-agent")
				got, err := os.ReadFile(bin)
				want, _ := os.ReadFile(agentBin(t))
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("installed binary differs (%v)", err)
				}
				out, err := exec.Command(bin, "version").Output()
				if err != nil || strings.TrimSpace(string(out)) != "opengeni-agent "+testVersion {
					t.Fatalf("installed binary: %q %v", out, err)
				}
				if ents, _ := os.ReadDir(res.tmp); len(ents) != 0 {
					t.Fatalf("left temp files: %v", ents)
				}
				if !strings.Contains(res.stderr, "checksum and signature verified") {
					t.Fatalf("stderr:\n%s", res.stderr)
				}
				t.Logf("%s: installed in %s", name, res.took.Round(time.Millisecond))
			})
		}
	}
}

func TestInstallFailuresLeaveNothing(t *testing.T) {
	_, otherKey, _ := minisign.GenerateKey(nil)
	cases := []struct {
		name    string
		mutate  func(t *testing.T, r *release)
		env     []string
		code    int
		message string
	}{
		{"tampered binary", func(t *testing.T, r *release) {
			f, _ := os.OpenFile(r.art, os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString("TAMPERED")
			f.Close()
			r.rewriteSHA(t) // the checksum matches: only the signature can catch it
		}, nil, 5, "signature check failed"},
		{"wrong signature", func(t *testing.T, r *release) {
			data, _ := os.ReadFile(r.art)
			rd := minisign.NewReader(bytes.NewReader(data))
			buf := make([]byte, 1<<16)
			for {
				if _, err := rd.Read(buf); err != nil {
					break
				}
			}
			os.WriteFile(r.art+".minisig", rd.Sign(otherKey), 0o644)
		}, nil, 5, "signature check failed"},
		{"garbage signature", func(t *testing.T, r *release) {
			os.WriteFile(r.art+".minisig", []byte("untrusted comment: x\nnot base64!\n"), 0o644)
		}, nil, 5, "signature check failed"},
		{"wrong checksum", func(t *testing.T, r *release) {
			os.WriteFile(r.art+".sha256", []byte(strings.Repeat("ab", 32)+"  x\n"), 0o644)
		}, nil, 4, "checksum mismatch"},
		{"unknown architecture", nil, []string{"OPENGENI_INSTALL_ARCH_OVERRIDE=riscv64"}, 7, "unsupported architecture: riscv64"},
		{"unknown OS", nil, []string{"OPENGENI_INSTALL_OS_OVERRIDE=FreeBSD"}, 7, "unsupported OS: FreeBSD"},
		{"missing artifact", func(t *testing.T, r *release) { os.Remove(r.art) }, nil, 3, "download failed"},
	}
	for _, shell := range shells {
		for _, withMinisign := range []bool{true, false} {
			for _, tc := range cases {
				verifier := "openssl"
				if withMinisign {
					verifier = "minisign"
				}
				t.Run(shell+"/"+verifier+"/"+tc.name, func(t *testing.T) {
					r := newRelease(t)
					if tc.mutate != nil {
						tc.mutate(t, r)
					}
					res := runInstall(t, shell, r, toolPath(t, withMinisign), tc.env...)
					if res.code != tc.code || !strings.Contains(res.stderr, tc.message) {
						t.Fatalf("exit %d (want %d), stderr:\n%s", res.code, tc.code, res.stderr)
					}
					res.assertNothingInstalled(t)
				})
			}
		}
	}
}

func TestUninstallPurge(t *testing.T) {
	r := newRelease(t)
	res := runInstall(t, "dash", r, toolPath(t, false))
	if res.code != 0 {
		t.Fatalf("install: %s", res.stderr)
	}
	cfg := filepath.Join(res.home, ".config", "opengeni", "agent")
	os.MkdirAll(cfg, 0o700)
	os.WriteFile(filepath.Join(cfg, "credentials.json"), []byte("{}"), 0o600)
	for _, purge := range []bool{false, true} {
		args := []string{filepath.Join(r.dir, "uninstall.sh")}
		if purge {
			args = append(args, "--purge")
		}
		cmd := exec.Command("dash", args...)
		// no systemctl on PATH: the service step fails soft, as on a box without systemd
		cmd.Env = []string{"HOME=" + res.home, "PATH=" + toolPath(t, false)}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("uninstall %v: %v\n%s", purge, err, out)
		}
		_, cfgErr := os.Stat(filepath.Join(cfg, "credentials.json"))
		if purge == (cfgErr == nil) {
			t.Fatalf("purge=%v: credentials present=%v\n%s", purge, cfgErr == nil, out)
		}
		if _, err := os.Stat(filepath.Join(res.home, ".local", "bin", "opengeni-agent")); err == nil {
			t.Fatal("binary still there")
		}
		if !purge { // reinstall for the purge round
			if res2 := runInstallHome(t, r, res.home); res2 != 0 {
				t.Fatal("reinstall failed")
			}
		}
	}
	if code := exec.Command("dash", filepath.Join(r.dir, "uninstall.sh"), "--bogus").Run(); code == nil {
		t.Fatal("unknown argument accepted")
	}
}

func runInstallHome(t *testing.T, r *release, home string) int {
	srv := httptest.NewServer(http.FileServer(http.Dir(r.dir)))
	defer srv.Close()
	cmd := exec.Command("dash", filepath.Join(r.dir, "install.sh"))
	cmd.Env = []string{"HOME=" + home, "PATH=" + toolPath(t, false), "OPENGENI_INSTALL_BASE_URL=" + srv.URL, "OPENGENI_INSTALL_NO_SERVICE=1"}
	if err := cmd.Run(); err != nil {
		return 1
	}
	return 0
}

func TestPublishedScriptPinsTheReleaseKey(t *testing.T) {
	r := newRelease(t)
	for _, name := range []string{"install.sh", "install.ps1"} {
		data, _ := os.ReadFile(filepath.Join(r.dir, name))
		if !strings.Contains(string(data), r.key.PublicKeyLine()) || strings.Contains(string(data), update.PublicKey) {
			t.Fatalf("%s does not pin the release key", name)
		}
	}
	src, _ := os.ReadFile("install.sh")
	if !strings.Contains(string(src), "OPENGENI_PINNED_PUBKEY='"+update.PublicKey+"'") {
		t.Fatal("the repository's install.sh must pin the same default key as agent/update")
	}
}

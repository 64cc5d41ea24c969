package update_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/internal/cmd/release/publish"
)

// fakeBinary is a shell script that answers `health` like the agent does
// (or crashes when crash is set). The real-binary end-to-end test lives in
// cmd/opengeni-agent; this one exercises the flow without a Go build.
func fakeBinary(t *testing.T, dir, version string, crash bool) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("shell-script fake binaries need a unix shell")
	}
	body := "#!/bin/sh\necho \"opengeni-agent " + version + " ok\"\n"
	if crash {
		body = "#!/bin/sh\necho 'panic: boom' >&2\nexit 2\n"
	}
	p := filepath.Join(dir, "build-"+version)
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type fixture struct {
	dir, exe string
	srv      *httptest.Server
	key      *publish.Key
}

// newFixture publishes version (built by fakeBinary) for this host's target
// and installs a "running" 1.0.0 binary at exe.
func newFixture(t *testing.T, version string, crash bool, mutate func(r *publish.Release)) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), key: testKey(t)}
	build := fakeBinary(t, t.TempDir(), version, crash)
	r := publish.Release{Dir: f.dir, Version: version, Artifacts: map[string]string{update.Target(): build}, Key: f.key}
	if mutate != nil {
		mutate(&r)
	}
	if _, err := publish.Write(r); err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(http.FileServer(http.Dir(f.dir)))
	t.Cleanup(f.srv.Close)
	f.exe = filepath.Join(t.TempDir(), "opengeni-agent")
	old, _ := os.ReadFile(fakeBinary(t, t.TempDir(), "1.0.0", false))
	if err := os.WriteFile(f.exe, old, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) updater(t *testing.T, mut func(o *update.Options)) *update.Updater {
	t.Helper()
	o := update.Options{BaseURL: f.srv.URL, CurrentVersion: "1.0.0", AgentID: "agent-1", PublicKey: f.key.PublicKeyLine(), Executable: f.exe}
	if mut != nil {
		mut(&o)
	}
	u, err := update.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (f *fixture) live(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(f.exe)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNewerSignedBuildIsAppliedAndPassesHealth(t *testing.T) {
	f := newFixture(t, "1.1.0", false, nil)
	var calls []string
	u := f.updater(t, func(o *update.Options) {
		o.Drain = func(context.Context) error { calls = append(calls, "drain"); return nil }
		o.Restart = func(context.Context) error { calls = append(calls, "restart"); return nil }
		o.Verify = func(context.Context) error { calls = append(calls, "verify"); return nil }
	})
	res, err := u.Check(context.Background())
	if err != nil || !res.Available {
		t.Fatalf("check: %+v %v", res, err)
	}
	ap, err := u.Apply(context.Background(), res)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.live(t), "1.1.0") || ap.RolledBack || !ap.Restarted {
		t.Fatalf("live %q applied %+v", f.live(t), ap)
	}
	prev, err := os.ReadFile(update.PreviousPath(f.exe))
	if err != nil || !strings.Contains(string(prev), "1.0.0") {
		t.Fatalf("previous kept: %q %v", prev, err)
	}
	if strings.Join(calls, ",") != "drain,restart,verify" {
		t.Fatalf("hooks ran %v", calls)
	}
	if st, _ := os.Stat(f.exe); st.Mode().Perm()&0o111 == 0 {
		t.Fatal("not executable")
	}
}

func TestBuildThatCrashesAtStartIsRolledBack(t *testing.T) {
	f := newFixture(t, "1.1.0", true, nil)
	restarted := false
	u := f.updater(t, func(o *update.Options) {
		o.Restart = func(context.Context) error { restarted = true; return nil }
	})
	res, err := u.Check(context.Background())
	if err != nil || !res.Available {
		t.Fatalf("check: %+v %v", res, err)
	}
	ap, err := u.Apply(context.Background(), res)
	if !errors.Is(err, update.ErrHealthCheck) || !ap.RolledBack {
		t.Fatalf("apply: %+v %v", ap, err)
	}
	if !strings.Contains(f.live(t), "1.0.0") || restarted {
		t.Fatalf("live %q restarted %v", f.live(t), restarted)
	}
	if _, err := os.Stat(update.PreviousPath(f.exe)); err == nil {
		t.Fatal("previous still there after rollback")
	}
}

func TestRestartedAgentNotServingRollsBack(t *testing.T) {
	f := newFixture(t, "1.1.0", false, nil)
	restarts := 0
	u := f.updater(t, func(o *update.Options) {
		o.Restart = func(context.Context) error { restarts++; return nil }
		o.Verify = func(context.Context) error { return errors.New("service is failed") }
	})
	res, _ := u.Check(context.Background())
	_, err := u.Apply(context.Background(), res)
	if !errors.Is(err, update.ErrHealthCheck) || !strings.Contains(f.live(t), "1.0.0") || restarts != 2 {
		t.Fatalf("err %v live %q restarts %d", err, f.live(t), restarts)
	}
}

func TestDowngradeAndSameVersionAreRefused(t *testing.T) {
	f := newFixture(t, "0.9.0", false, nil)
	res, err := f.updater(t, nil).Check(context.Background())
	if err != nil || res.Available || !strings.Contains(res.Reason, "not newer") {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = f.updater(t, func(o *update.Options) { o.CurrentVersion = "0.9.0" }).Check(context.Background())
	if err != nil || res.Available {
		t.Fatalf("same version: %+v %v", res, err)
	}
	if _, err := f.updater(t, nil).Apply(context.Background(), res); err == nil {
		t.Fatal("applied a refused result")
	}
}

func TestMinSupportedFloor(t *testing.T) {
	f := newFixture(t, "1.1.0", false, func(r *publish.Release) { r.MinSupported = "1.2.0" })
	res, err := f.updater(t, nil).Check(context.Background())
	if err != nil || res.Available || !strings.Contains(res.Reason, "min_supported") {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRolloutGateStagesTheCohort(t *testing.T) {
	// agent-1 with salt "salt-a" is in bucket 63 (see TestRolloutBucketMatchesBlake3Reference).
	f := newFixture(t, "1.1.0", false, func(r *publish.Release) { r.Rollout, r.Salt = 63, "salt-a" })
	res, err := f.updater(t, func(o *update.Options) { o.AgentID = "agent-1" }).Check(context.Background())
	if err != nil || res.Available || !strings.Contains(res.Reason, "staged at 63%") {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = f.updater(t, func(o *update.Options) { o.AgentID = "agent-1"; o.Force = true }).Check(context.Background())
	if err != nil || !res.Available {
		t.Fatalf("force: %+v %v", res, err)
	}
	g := newFixture(t, "1.1.0", false, func(r *publish.Release) { r.Rollout, r.Salt = 64, "salt-a" })
	res, err = g.updater(t, func(o *update.Options) { o.AgentID = "agent-1" }).Check(context.Background())
	if err != nil || !res.Available {
		t.Fatalf("in cohort at 64%%: %+v %v", res, err)
	}
}

func TestUnsignedOrBadlySignedManifestIsRefused(t *testing.T) {
	f := newFixture(t, "1.1.0", false, nil)
	mpath := filepath.Join(f.dir, "agent", "stable", "manifest.json")
	data, _ := os.ReadFile(mpath)
	os.WriteFile(mpath, append(data, '\n'), 0o644) // tampered after signing
	if _, err := f.updater(t, nil).Check(context.Background()); !errors.Is(err, update.ErrSignature) {
		t.Fatalf("tampered manifest: %v", err)
	}
	os.Remove(mpath + ".minisig") // unsigned
	if _, err := f.updater(t, nil).Check(context.Background()); !errors.Is(err, update.ErrDownload) {
		t.Fatalf("unsigned manifest: %v", err)
	}
	// signed, but by another key than the pinned one
	other := newFixture(t, "1.1.0", false, nil)
	if _, err := other.updater(t, func(o *update.Options) { o.PublicKey = update.PublicKey }).Check(context.Background()); !errors.Is(err, update.ErrSignature) {
		t.Fatalf("wrong key: %v", err)
	}
	if !strings.Contains(f.live(t), "1.0.0") {
		t.Fatal("live binary touched")
	}
}

func TestTamperedArtifactAndWrongChecksumAreRefused(t *testing.T) {
	f := newFixture(t, "1.1.0", false, nil)
	art := filepath.Join(f.dir, "agent", "v1.1.0", update.AssetName(update.Target()))
	orig, _ := os.ReadFile(art)
	os.WriteFile(art, append(orig, "TAMPERED"...), 0o644)
	if _, err := f.updater(t, nil).Check(context.Background()); !errors.Is(err, update.ErrSignature) {
		t.Fatalf("tampered artifact: %v", err)
	}
	os.WriteFile(art, orig, 0o644)
	// a manifest (validly signed) whose sha256 does not match the artifact
	m, _ := os.ReadFile(filepath.Join(f.dir, "agent", "stable", "manifest.json"))
	man, _ := update.ParseManifest(m)
	man.Artifacts[0].SHA256 = strings.Repeat("0", 64)
	if err := publish.WriteManifest(filepath.Join(f.dir, "agent", "stable"), man, f.key); err != nil {
		t.Fatal(err)
	}
	if _, err := f.updater(t, nil).Check(context.Background()); !errors.Is(err, update.ErrChecksum) {
		t.Fatalf("wrong checksum: %v", err)
	}
	// no artifact for this target
	man.Artifacts[0].Target = "riscv64-unknown-linux-musl"
	publish.WriteManifest(filepath.Join(f.dir, "agent", "stable"), man, f.key)
	if _, err := f.updater(t, nil).Check(context.Background()); !errors.Is(err, update.ErrNoArtifact) {
		t.Fatalf("no artifact: %v", err)
	}
}

func TestFileBaseURL(t *testing.T) {
	f := newFixture(t, "1.1.0", false, nil)
	res, err := f.updater(t, func(o *update.Options) { o.BaseURL = "file://" + filepath.ToSlash(f.dir) }).Check(context.Background())
	if err != nil || !res.Available {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestSwapRollback(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bin")
	kept, err := update.Swap(p, []byte("FIRST"))
	if err != nil || kept {
		t.Fatalf("first install: %v %v", kept, err)
	}
	if err := update.Rollback(p); !errors.Is(err, update.ErrNoBackup) {
		t.Fatalf("rollback without backup: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "FIRST" {
		t.Fatal("live touched")
	}
	if kept, err := update.Swap(p, []byte("SECOND")); err != nil || !kept {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(update.PreviousPath(p)); string(b) != "FIRST" {
		t.Fatalf("previous %q", b)
	}
	if err := update.Rollback(p); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "FIRST" {
		t.Fatalf("after rollback %q", b)
	}
	if _, err := os.Stat(p + ".new"); err == nil {
		t.Fatal("staging file left")
	}
}

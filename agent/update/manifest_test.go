package update

import (
	"errors"
	"testing"
)

// The buckets below were computed independently with the b3sum CLI:
// printf '%s%s' "$id" "$salt" | b3sum, first 8 bytes little-endian, mod 100.
func TestRolloutBucketMatchesBlake3Reference(t *testing.T) {
	for _, tc := range []struct {
		id, salt string
		bucket   int
	}{
		{"agent-1", "", 4},
		{"agent-1", "salt-a", 63},
		{"agent-2", "salt-a", 82},
		{"machine-7f3a", "v1.2.3", 52},
		{"unenrolled", "", 46},
		{"00000000-0000-0000-0000-000000000000", "fixture", 17},
	} {
		if got := RolloutBucket(tc.id, tc.salt); got != tc.bucket {
			t.Errorf("RolloutBucket(%q,%q) = %d, want %d", tc.id, tc.salt, got, tc.bucket)
		}
	}
}

func TestInRolloutGate(t *testing.T) {
	for _, tc := range []struct {
		id, salt string
		percent  int
		in       bool
	}{
		{"agent-1", "", 100, true}, // ≥100 always in
		{"agent-1", "", 200, true}, //
		{"agent-1", "", 0, false},  // 0 always out
		{"agent-1", "", -5, false}, //
		{"agent-1", "", 4, false},  // bucket 4: in iff 4 < percent
		{"agent-1", "", 5, true},   //
		{"agent-1", "salt-a", 63, false},
		{"agent-1", "salt-a", 64, true},
		{"agent-2", "salt-a", 50, false},
		{"agent-2", "salt-a", 83, true},
		{"machine-7f3a", "v1.2.3", 52, false},
		{"machine-7f3a", "v1.2.3", 53, true},
		{"00000000-0000-0000-0000-000000000000", "fixture", 18, true},
		{"00000000-0000-0000-0000-000000000000", "fixture", 17, false},
	} {
		if got := InRollout(tc.id, tc.salt, tc.percent); got != tc.in {
			t.Errorf("InRollout(%q,%q,%d) = %v, want %v", tc.id, tc.salt, tc.percent, got, tc.in)
		}
	}
}

func TestRolloutIsMonotoneAndSpreads(t *testing.T) {
	for i := 0; i < 50; i++ {
		id := "agent-" + string(rune('a'+i%26)) + string(rune('0'+i/26))
		seen := false
		for p := 0; p <= 100; p++ {
			in := InRollout(id, "s", p)
			if seen && !in {
				t.Fatalf("%s left the cohort at %d%%", id, p)
			}
			seen = seen || in
		}
		if !seen {
			t.Fatalf("%s never joined", id)
		}
	}
	in := 0
	for i := 0; i < 1000; i++ {
		if InRollout("agent-"+itoa(i), "salt", 50) {
			in++
		}
	}
	if in <= 300 || in >= 700 {
		t.Fatalf("1000 agents at 50%%: %d included", in)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestParseManifest(t *testing.T) {
	m, err := ParseManifest([]byte(`{"channel":"stable","version":"1.2.0","min_supported":"1.0.0","rollout_percent":25,
		"artifacts":[{"target":"aarch64-apple-darwin","url":"u","sha256":"feedface","minisig_url":"u.minisig"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "1.2.0" || m.RolloutPercent != 25 {
		t.Fatalf("got %+v", m)
	}
	a, err := m.ArtifactFor("aarch64-apple-darwin")
	if err != nil || a.SHA256 != "feedface" {
		t.Fatalf("artifact %+v %v", a, err)
	}
	if _, err := m.ArtifactFor("x86_64-unknown-linux-musl"); !errors.Is(err, ErrNoArtifact) {
		t.Fatalf("unknown target: %v", err)
	}
	m, err = ParseManifest([]byte(`{"channel":"stable","version":"1.2.0","min_supported":"1.0.0","artifacts":[]}`))
	if err != nil || m.RolloutPercent != 100 {
		t.Fatalf("default rollout: %+v %v", m, err)
	}
	for _, bad := range []string{`{ not json`, `{"channel":"stable","version":"1"}`, `{"channel":"s","version":"1","min_supported":"1","artifacts":[{"target":"t"}]}`} {
		if _, err := ParseManifest([]byte(bad)); !errors.Is(err, ErrManifest) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestVersionGate(t *testing.T) {
	for _, tc := range []struct {
		cand, cur, min string
		allowSame      bool
		ok             bool
	}{
		{"1.2.0", "1.1.0", "1.0.0", false, true},
		{"v1.2.0", "1.1.0", "0.0.0", false, true},
		{"1.1.0", "1.1.0", "1.0.0", false, false}, // equal: refused by default
		{"1.1.0", "1.1.0", "1.0.0", true, true},
		{"1.0.0", "1.1.0", "0.0.0", false, false}, // downgrade: never
		{"1.0.0", "1.1.0", "0.0.0", true, false},
		{"0.9.0", "0.8.0", "1.0.0", false, false}, // below the floor
		{"0.1.3", "0.1.3-dev", "0.0.0", false, true},
		{"not-a-version", "1.0.0", "0.0.0", false, false},
		{"1.0.0", "garbage", "0.0.0", false, false},
	} {
		err := VersionGate(tc.cand, tc.cur, tc.min, tc.allowSame)
		if (err == nil) != tc.ok {
			t.Errorf("VersionGate(%s,%s,%s,%v) = %v, want ok=%v", tc.cand, tc.cur, tc.min, tc.allowSame, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrVersionGate) {
			t.Errorf("not ErrVersionGate: %v", err)
		}
	}
}

func TestTargets(t *testing.T) {
	for _, tc := range []struct{ goos, goarch, want string }{
		{"linux", "amd64", "x86_64-unknown-linux-musl"},
		{"linux", "arm64", "aarch64-unknown-linux-musl"},
		{"darwin", "arm64", "aarch64-apple-darwin"},
		{"darwin", "amd64", "x86_64-apple-darwin"},
		{"windows", "amd64", "x86_64-pc-windows-msvc"},
		{"windows", "arm64", "aarch64-pc-windows-msvc"},
		{"linux", "386", "unknown"},
		{"plan9", "amd64", "unknown"},
	} {
		if got := TargetFor(tc.goos, tc.goarch); got != tc.want {
			t.Errorf("TargetFor(%s,%s) = %s", tc.goos, tc.goarch, got)
		}
	}
	if AssetName("x86_64-pc-windows-msvc") != "opengeni-agent-x86_64-pc-windows-msvc.exe" || AssetName("aarch64-apple-darwin") != "opengeni-agent-aarch64-apple-darwin" {
		t.Fatal("asset names")
	}
}

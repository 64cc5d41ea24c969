package envmerge

import (
	"errors"
	"slices"
	"testing"
)

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		name string
		goos string
		base []string
		over map[string]string
		want []string
	}{
		{"override keeps the place", "linux", []string{"A=1", "PATH=/bin", "B=2"}, map[string]string{"PATH": "/x"},
			[]string{"A=1", "PATH=/x", "B=2"}},
		{"new names append in sorted order", "linux", []string{"A=1"}, map[string]string{"Z": "z", "M": "m"},
			[]string{"A=1", "M=m", "Z=z"}},
		{"unix keeps names that differ in case apart", "linux", []string{"Path=/a"}, map[string]string{"PATH": "/b"},
			[]string{"Path=/a", "PATH=/b"}},
		{"windows folds case", "windows", []string{"Path=C:\\a", "B=2"}, map[string]string{"PATH": "C:\\b"},
			[]string{"PATH=C:\\b", "B=2"}},
		{"windows: case twins in over apply in sorted order", "windows", nil, map[string]string{"path": "2", "PATH": "1"},
			[]string{"path=2"}},
		{"base duplicates collapse, last wins", "linux", []string{"A=1", "B=2", "A=3"}, nil,
			[]string{"A=3", "B=2"}},
		{"windows base duplicates fold", "windows", []string{"TEMP=a", "Temp=b"}, nil,
			[]string{"Temp=b"}},
		{"nameless base entries kept as is", "windows", []string{"=C:=C:\\w", "A=1"}, map[string]string{"a": "2"},
			[]string{"=C:=C:\\w", "a=2"}},
		{"empty value is a value", "linux", []string{"GIT_ASKPASS=x"}, map[string]string{"GIT_ASKPASS": ""},
			[]string{"GIT_ASKPASS="}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := For(tc.goos).Merge(tc.base, tc.over)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Merge = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMergeRefusesInvalidEntries(t *testing.T) {
	for _, over := range []map[string]string{{"": "x"}, {"A=B": "x"}, {"A\x00": "x"}, {"A": "x\x00y"}} {
		if got, err := Host.Merge([]string{"OK=1"}, over); !errors.Is(err, ErrInvalid) {
			t.Errorf("Merge(%q) = %q, %v; want ErrInvalid", over, got, err)
		}
	}
}

func TestEqualLookupSet(t *testing.T) {
	for _, tc := range []struct {
		goos      string
		a, b      string
		equal     bool
		lookupKey string
		want      string
		found     bool
	}{
		{"linux", "PATH", "Path", false, "Path", "", false},
		{"darwin", "PATH", "PATH", true, "PATH", "/second", true},
		{"windows", "PATH", "Path", true, "path", "/second", true},
		{"windows", "ComSpec", "COMSPEC", true, "COMSPEC", "", false},
	} {
		k := For(tc.goos)
		if got := k.Equal(tc.a, tc.b); got != tc.equal {
			t.Errorf("%s: Equal(%q, %q) = %v, want %v", tc.goos, tc.a, tc.b, got, tc.equal)
		}
		env := []string{"PATH=/first", "X=1", "PATH=/second"}
		if v, ok := k.Lookup(env, tc.lookupKey); v != tc.want || ok != tc.found {
			t.Errorf("%s: Lookup(%q) = %q %v, want %q %v", tc.goos, tc.lookupKey, v, ok, tc.want, tc.found)
		}
	}
	got := For("windows").Set([]string{"Path=a", "X=1", "PATH=b"}, "path", "c")
	if want := []string{"path=c", "X=1"}; !slices.Equal(got, want) {
		t.Fatalf("windows Set = %q, want %q", got, want)
	}
	got = For("linux").Set([]string{"Path=a", "X=1"}, "PATH", "c")
	if want := []string{"Path=a", "X=1", "PATH=c"}; !slices.Equal(got, want) {
		t.Fatalf("linux Set = %q, want %q", got, want)
	}
}

package capture

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

func TestBufferKeepsHeadAndCountsAll(t *testing.T) {
	c := NewBuffer(10)
	for _, chunk := range []string{"0123", "456789ab", "cdef"} {
		n, err := c.Write([]byte(chunk))
		if n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want %d, nil (never block the child)", chunk, n, err, len(chunk))
		}
	}
	if got := string(c.buf); got != "0123456789" {
		t.Errorf("kept %q, want the first 10 bytes", got)
	}
	if c.total != 16 {
		t.Errorf("total = %d, want 16", c.total)
	}
	if cap(c.buf) > c.limit {
		t.Errorf("cap %d exceeds limit %d", cap(c.buf), c.limit)
	}
}

func TestFit(t *testing.T) {
	fill := func(b byte, n int) *Buffer {
		c := NewBuffer(1 << 20)
		c.Write(bytes.Repeat([]byte{b}, n))
		return c
	}
	tests := []struct {
		name               string
		out, errs, limit   int
		wantOut, wantErr   int  // kept content bytes
		wantOutCut, errCut bool // markers expected
	}{
		{name: "fits", out: 10, errs: 10, limit: 100, wantOut: 10, wantErr: 10},
		{name: "exact", out: 50, errs: 50, limit: 100, wantOut: 50, wantErr: 50},
		{name: "stdout floods, stderr kept whole", out: 100000, errs: 20, limit: 1000, wantErr: 20, wantOutCut: true},
		{name: "stderr floods, stdout kept whole", out: 20, errs: 100000, limit: 1000, wantOut: 20, errCut: true},
		{name: "both flood", out: 100000, errs: 100000, limit: 1000, wantOutCut: true, errCut: true},
		{name: "tiny budget", out: 100, errs: 100, limit: 30, wantOutCut: true, errCut: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs := fill('o', tt.out), fill('e', tt.errs)
			stdout, stderr, truncated := Fit(out, errs, tt.limit)
			if len(stdout)+len(stderr) > tt.limit {
				t.Fatalf("kept %d+%d bytes, over the limit %d", len(stdout), len(stderr), tt.limit)
			}
			if truncated != (tt.wantOutCut || tt.errCut) {
				t.Errorf("truncated = %v", truncated)
			}
			if strings.Trim(string(stdout), "o") != "" {
				t.Errorf("stdout has foreign bytes: %q", stdout)
			}
			if tt.limit < 100 {
				return // markers themselves were cut; the limit held
			}
			if !tt.wantOutCut && len(stdout) != tt.wantOut {
				t.Errorf("stdout kept %d, want %d", len(stdout), tt.wantOut)
			}
			errContent := strings.TrimLeft(string(stderr), "e")
			if !tt.errCut && len(stderr)-len(errContent) != tt.wantErr {
				t.Errorf("stderr kept %d content bytes, want %d", len(stderr)-len(errContent), tt.wantErr)
			}
			if got := strings.Contains(errContent, "[opengeni-agent: stdout truncated: kept "); got != tt.wantOutCut {
				t.Errorf("stdout marker present = %v, want %v; stderr tail %q", got, tt.wantOutCut, errContent)
			}
			if got := strings.Contains(errContent, "[opengeni-agent: stderr truncated: kept "); got != tt.errCut {
				t.Errorf("stderr marker present = %v, want %v; stderr tail %q", got, tt.errCut, errContent)
			}
			if tt.wantOutCut && tt.errCut && (len(stdout) == 0 || len(stderr)-len(errContent) == 0) {
				t.Errorf("both flooding should share the budget, kept %d and %d", len(stdout), len(stderr)-len(errContent))
			}
		})
	}
}

func TestFitDoesNotAliasBuffer(t *testing.T) {
	out := NewBuffer(1 << 20)
	out.Write(bytes.Repeat([]byte("o"), 5000))
	errs := NewBuffer(1 << 20)
	errs.Write([]byte("eeee"))
	errs.buf = append(errs.buf, "spare capacity"...)[:4]
	_, stderr, _ := Fit(out, errs, 1000)
	if !strings.HasPrefix(string(stderr), "eeee\n[opengeni-agent") {
		t.Fatalf("stderr = %q", stderr)
	}
	if string(errs.buf[:cap(errs.buf)][4:8]) != "spar" {
		t.Error("fit wrote into the capture's spare capacity")
	}
}

func TestBufferReadFrom(t *testing.T) {
	src := strings.Repeat("x", 100000)
	c := NewBuffer(5000)
	n, err := c.ReadFrom(strings.NewReader(src))
	if err != nil || n != int64(len(src)) {
		t.Fatalf("ReadFrom = %d, %v; want %d, nil", n, err, len(src))
	}
	if len(c.buf) != 5000 || c.total != 100000 || cap(c.buf) > 5000 {
		t.Errorf("kept %d (cap %d) total %d, want 5000 kept of 100000", len(c.buf), cap(c.buf), c.total)
	}
}

// TestFitMarkers: every stream not carried whole gets exactly one marker,
// stdout's before stderr's, every time (the git path used to emit them in
// map order).
func TestFitMarkers(t *testing.T) {
	stream := func(b byte, n int, cut bool) *Buffer {
		c := NewBuffer(1 << 20)
		c.Write(bytes.Repeat([]byte{b}, n))
		c.cut = cut
		return c
	}
	tests := []struct {
		name        string
		out, errs   *Buffer
		limit       int
		wantMarkers []string // in order
		wantOut     int      // stdout bytes kept
	}{
		{name: "whole", out: stream('o', 10, false), errs: stream('e', 10, false), limit: 1000, wantOut: 10},
		{name: "both truncated", out: stream('o', 5000, false), errs: stream('e', 5000, false), limit: 1000,
			wantMarkers: []string{"stdout truncated: kept ", "stderr truncated: kept "}, wantOut: -1},
		{name: "stdout cut, fits", out: stream('o', 10, true), errs: stream('e', 10, false), limit: 1000,
			wantMarkers: []string{"stdout cut: read 10 bytes; stopped reading after the command exited"}, wantOut: 10},
		{name: "stderr cut and truncated", out: stream('o', 10, false), errs: stream('e', 5000, true), limit: 1000,
			wantMarkers: []string{"stderr truncated: kept "}, wantOut: 10},
		{name: "both cut", out: stream('o', 0, true), errs: stream('e', 0, true), limit: 1000,
			wantMarkers: []string{"stdout cut: read 0 bytes", "stderr cut: read 0 bytes"}, wantOut: 0},
	}
	markerRe := regexp.MustCompile(`\n\[opengeni-agent: ([^\]]*)\]\n`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 20 { // order must not vary between calls
				stdout, stderr, truncated := Fit(tt.out, tt.errs, tt.limit)
				if len(stdout)+len(stderr) > tt.limit {
					t.Fatalf("%d+%d bytes over the limit %d", len(stdout), len(stderr), tt.limit)
				}
				if truncated != (len(tt.wantMarkers) > 0) {
					t.Fatalf("truncated = %v with markers %q", truncated, tt.wantMarkers)
				}
				if tt.wantOut >= 0 && len(stdout) != tt.wantOut {
					t.Fatalf("stdout kept %d, want %d", len(stdout), tt.wantOut)
				}
				got := markerRe.FindAllStringSubmatch(string(stderr), -1)
				if len(got) != len(tt.wantMarkers) {
					t.Fatalf("markers %q, want %q", got, tt.wantMarkers)
				}
				for i, m := range got {
					if !strings.HasPrefix(m[1], tt.wantMarkers[i]) {
						t.Fatalf("marker %d = %q, want prefix %q", i, m[1], tt.wantMarkers[i])
					}
				}
			}
		})
	}
}

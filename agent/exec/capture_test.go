package exec

import (
	"bytes"
	"strings"
	"testing"
)

func TestCaptureKeepsHeadAndCountsAll(t *testing.T) {
	c := &capture{limit: 10}
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
	fill := func(b byte, n int) *capture {
		c := &capture{limit: 1 << 20}
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
			stdout, stderr, truncated := fit(out, errs, tt.limit)
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

func TestFitDoesNotAliasCaptureBuffer(t *testing.T) {
	out := &capture{limit: 1 << 20}
	out.Write(bytes.Repeat([]byte("o"), 5000))
	errs := &capture{limit: 1 << 20}
	errs.Write([]byte("eeee"))
	errs.buf = append(errs.buf, "spare capacity"...)[:4]
	_, stderr, _ := fit(out, errs, 1000)
	if !strings.HasPrefix(string(stderr), "eeee\n[opengeni-agent") {
		t.Fatalf("stderr = %q", stderr)
	}
	if string(errs.buf[:cap(errs.buf)][4:8]) != "spar" {
		t.Error("fit wrote into the capture's spare capacity")
	}
}

func TestCaptureReadFrom(t *testing.T) {
	src := strings.Repeat("x", 100000)
	c := &capture{limit: 5000}
	n, err := c.ReadFrom(strings.NewReader(src))
	if err != nil || n != int64(len(src)) {
		t.Fatalf("ReadFrom = %d, %v; want %d, nil", n, err, len(src))
	}
	if len(c.buf) != 5000 || c.total != 100000 || cap(c.buf) > 5000 {
		t.Errorf("kept %d (cap %d) total %d, want 5000 kept of 100000", len(c.buf), cap(c.buf), c.total)
	}
}

package fs

import (
	"bytes"
	"path/filepath"
	"testing"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func BenchmarkRead1MiB(b *testing.B) {
	s, dir := newService(b)
	mustWrite(b, filepath.Join(dir, "f"), string(bytes.Repeat([]byte("r"), 1<<20)), 0o644)
	req := &agentpb.FsReadRequest{Path: "f"}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := s.Read(bg, req)
		if err != nil || len(resp.Content) != 1<<20 {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite1MiB is an atomic replace: temp file, fsync, rename.
func BenchmarkWrite1MiB(b *testing.B) {
	s, _ := newService(b)
	req := &agentpb.FsWriteRequest{Path: "f", Content: bytes.Repeat([]byte("w"), 1<<20)}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Write(bg, req); err != nil {
			b.Fatal(err)
		}
	}
}

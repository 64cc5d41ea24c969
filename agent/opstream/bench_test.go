package opstream_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/opengeni/opengeni-agent/control"
)

// BenchmarkInProcess moves 64 MiB each way with agent, server and client
// in this process: for -cpuprofile/-memprofile of the whole path (the e2e
// BenchmarkTransfer measures the deployment shape).
func BenchmarkInProcess(b *testing.B) {
	f := start(b)
	s := f.session(b)
	data := make([]byte, 64<<20)
	rand.Read(data)
	ctx := context.Background()
	for _, inflight := range []int{2, 4, 8, 16} {
		b.Run("up-inflight"+strconv.Itoa(inflight), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for range b.N {
				if n, err := s.WriteFileStream(ctx, "up.bin", bytes.NewReader(data), int64(len(data)), &control.ChunkedWriteOptions{InFlight: inflight}); err != nil || n != int64(len(data)) {
					b.Fatal(n, err)
				}
			}
		})
	}
	if err := os.WriteFile(filepath.Join(f.root, "down.bin"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("down", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for range b.N {
			if n, err := s.ReadFileStream(ctx, "down.bin", io.Discard, nil, nil); err != nil || n != int64(len(data)) {
				b.Fatal(n, err)
			}
		}
	})
}

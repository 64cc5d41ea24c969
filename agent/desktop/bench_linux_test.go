//go:build linux

package desktop

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"testing"

	"github.com/kbinani/screenshot"
	"golang.org/x/image/draw"

	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// BenchmarkScreenshot measures a desktop-like screen of 1920x1080 and
// 3840x2160 fitted into 1 MiB: capture, scale and encode separately, the
// end-to-end op, and baselines (kbinani/screenshot raw capture, image/png
// default compression).
func BenchmarkScreenshot(b *testing.B) {
	for _, sz := range []image.Point{{1920, 1080}, {3840, 2160}} {
		b.Run(fmt.Sprintf("%dx%d", sz.X, sz.Y), func(b *testing.B) {
			name := startXvfb(b, sz.X, sz.Y)
			dialX(b, name).put(desktopLike(sz.X, sz.Y, 1))
			d := New(Options{Display: name})
			defer d.Close()
			ctx := context.Background()
			img, err := d.target().capture(ctx)
			if err != nil {
				b.Fatal(err)
			}
			const budget = 1 << 20
			fitted, err := fitPNG(img, budget)
			if err != nil {
				b.Fatal(err)
			}

			b.Run("capture", func(b *testing.B) {
				for b.Loop() {
					if _, err := d.target().capture(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("capture-kbinani-baseline", func(b *testing.B) {
				b.Setenv("DISPLAY", name)
				for b.Loop() {
					if _, err := screenshot.CaptureDisplay(0); err != nil {
						b.Skipf("kbinani/screenshot fails against this X server: %v", err)
					}
				}
			})
			b.Run("encode-bestspeed-full", func(b *testing.B) {
				var n int
				for b.Loop() {
					p, err := encodePNG(img, 0)
					if err != nil {
						b.Fatal(err)
					}
					n = len(p)
				}
				b.ReportMetric(float64(n), "png-bytes")
			})
			b.Run("encode-stdlib-bestspeed-full-baseline", func(b *testing.B) {
				var n int
				enc := png.Encoder{CompressionLevel: png.BestSpeed}
				for b.Loop() {
					var buf bytes.Buffer
					if err := enc.Encode(&buf, img); err != nil {
						b.Fatal(err)
					}
					n = buf.Len()
				}
				b.ReportMetric(float64(n), "png-bytes")
			})
			b.Run("encode-stdlib-default-full-baseline", func(b *testing.B) {
				var n int
				for b.Loop() {
					var buf bytes.Buffer
					if err := png.Encode(&buf, img); err != nil {
						b.Fatal(err)
					}
					n = buf.Len()
				}
				b.ReportMetric(float64(n), "png-bytes")
			})
			if fitted.width != sz.X {
				for _, f := range []struct {
					name string
					f    draw.Interpolator
				}{{"bilinear", draw.BiLinear}, {"approxbilinear", draw.ApproxBiLinear}, {"catmullrom", draw.CatmullRom}} {
					b.Run("scale-baseline-"+f.name, func(b *testing.B) {
						dst := image.NewRGBA(image.Rect(0, 0, fitted.width, fitted.height))
						for b.Loop() {
							f.f.Scale(dst, dst.Bounds(), img, img.Bounds(), draw.Src, nil)
						}
						p, _ := encodePNG(dst, 0)
						b.ReportMetric(float64(len(p)), "png-bytes")
					})
				}
				b.Run("scale-halve+approxbilinear", func(b *testing.B) {
					var small *image.RGBA
					for b.Loop() {
						small = resize(img, fitted.width, fitted.height)
					}
					p, _ := encodePNG(small, 0)
					b.ReportMetric(float64(len(p)), "png-bytes")
				})
				b.Run("encode-bestspeed-scaled", func(b *testing.B) {
					small := resize(img, fitted.width, fitted.height)
					var n int
					for b.Loop() {
						p, _ := encodePNG(small, 0)
						n = len(p)
					}
					b.ReportMetric(float64(n), "png-bytes")
				})
			}
			b.Run("end-to-end-1MiB", func(b *testing.B) {
				rctx := opctx.WithMaxReply(ctx, budget+opctx.ReplyOverhead)
				var resp *agentpb.DesktopScreenshotResponse
				for b.Loop() {
					if resp, err = d.Screenshot(rctx, &agentpb.DesktopScreenshotRequest{}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(resp.Png)), "png-bytes")
				b.ReportMetric(float64(resp.Width), "width")
				b.ReportMetric(float64(fitted.attempts), "encodes")
			})
		})
	}
}

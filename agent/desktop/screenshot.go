package desktop

import (
	"context"
	"fmt"
	"image"
	"math"
	"strconv"

	"golang.org/x/image/draw"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// MinSide is the smallest side a screenshot is downscaled to; below it a
// model cannot read the screen anyway.
const MinSide = 320

// scaler finishes a downscale after box halving has brought the image to
// less than twice the target: for factors in (0.5, 1] ApproxBiLinear does
// not alias, and it is ~3× faster than BiLinear (BenchmarkScreenshot).
var scaler draw.Interpolator = draw.ApproxBiLinear

// encodePNG encodes a capture (fastpng.go).
func encodePNG(img *image.RGBA, sizeHint int) ([]byte, error) {
	b, err := encodeFastPNG(img, sizeHint)
	if err != nil {
		return nil, fmt.Errorf("encode png: %w", err)
	}
	return b, nil
}

// frame is an encoded capture.
type frame struct {
	png                  []byte
	width, height        int // encoded
	nativeW, nativeH     int // captured
	attempts             int // encodes performed
	fits                 bool
	budget, encodedBytes int
}

// resize scales src down to w×h (box halvings, then the package filter).
func resize(src *image.RGBA, w, h int) *image.RGBA {
	return (&pyramid{levels: []*image.RGBA{src}}).resize(w, h)
}

// estimateBand and estimateEvery pick the rows estimatePNG encodes: one
// band of 16 rows in every 4 (a quarter of the image, whole rows so
// horizontal structure is kept).
const (
	estimateBand  = 16
	estimateEvery = 4
	// estimateMinPixels: below this, a real encode is as cheap as an estimate.
	estimateMinPixels = 1 << 20
)

// estimatePNG predicts the PNG size of img by encoding a quarter of its
// rows (bands of 16). Screens are locally similar, so this is within a few
// percent, at a quarter of the cost.
func estimatePNG(img *image.RGBA) (int, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	bands := (h + estimateBand*estimateEvery - 1) / (estimateBand * estimateEvery)
	sample := image.NewRGBA(image.Rect(0, 0, w, bands*estimateBand))
	rows := 0
	for y := 0; y < h && rows < sample.Rect.Dy(); y += estimateBand * estimateEvery {
		for yy := y; yy < min(h, y+estimateBand) && rows < sample.Rect.Dy(); yy++ {
			copy(sample.Pix[rows*sample.Stride:(rows+1)*sample.Stride], img.Pix[yy*img.Stride:yy*img.Stride+4*w])
			rows++
		}
	}
	sample.Rect.Max.Y = rows
	sample.Pix = sample.Pix[:rows*sample.Stride]
	data, err := encodePNG(sample, 0)
	if err != nil {
		return 0, err
	}
	return len(data) * h / max(1, rows), nil
}

// pyramid caches box-halved versions of a capture across attempts.
type pyramid struct{ levels []*image.RGBA }

// resize scales to w×h from the smallest cached level at least twice as
// large, halving (and caching) as needed, then the package filter.
func (p *pyramid) resize(w, h int) *image.RGBA {
	i := 0
	for {
		cur := p.levels[i]
		if cur.Bounds().Dx() < 2*w || cur.Bounds().Dy() < 2*h {
			break
		}
		if i+1 == len(p.levels) {
			p.levels = append(p.levels, halve(cur))
		}
		i++
	}
	src := p.levels[i]
	if src.Bounds().Dx() == w && src.Bounds().Dy() == h {
		return src
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	scaler.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	return dst
}

// fitPNG encodes img and, when the PNG is over budget (budget > 0),
// downscales it keeping the aspect ratio until it fits, never below
// MinSide on the shorter side. Scales start at sqrt(budget/len)·0.9 and
// step ×0.8 (agent.md §5.8), with 1/2 tried exactly when a step crosses
// it (a box halving keeps text crisp and compresses best). Large images
// are sized with estimatePNG first, so clearly oversized candidates are
// never fully encoded. The result reports whether it fits.
func fitPNG(img *image.RGBA, budget int) (frame, error) {
	b := img.Bounds()
	nw, nh := b.Dx(), b.Dy()
	f := frame{width: nw, height: nh, nativeW: nw, nativeH: nh, budget: budget}
	// tooBig reports, from an estimate, that encoding m cannot fit.
	tooBig := func(m *image.RGBA, slack float64) (bool, int, error) {
		if budget <= 0 || m.Bounds().Dx()*m.Bounds().Dy() < estimateMinPixels {
			return false, 0, nil
		}
		est, err := estimatePNG(m)
		return float64(est) > slack*float64(budget), est, err
	}
	skip, size, err := tooBig(img, 1.25)
	if err != nil {
		return frame{}, err
	}
	if !skip {
		data, err := encodePNG(img, 0)
		if err != nil {
			return frame{}, err
		}
		f.png, f.attempts, size = data, 1, len(data)
		if budget <= 0 || len(data) <= budget {
			f.fits, f.encodedBytes = true, len(data)
			return f, nil
		}
	}
	minScale := math.Min(1, float64(MinSide)/float64(min(nw, nh)))
	pyr := &pyramid{levels: []*image.RGBA{img}}
	scale := math.Min(1, math.Sqrt(float64(budget)/float64(size))*0.9)
	// Between 1/2 and 3/4 on a large capture, go straight to 1/2: a box
	// halving costs a fraction of a bilinear resize of a 4K frame, keeps
	// text crisp, and an in-between size rarely fits once encoded anyway.
	if scale > 0.5 && scale <= 0.75 && nw*nh >= 4*estimateMinPixels {
		scale = 0.5
	}
	for tries := 0; tries < 12; tries++ {
		scale = math.Max(scale, minScale)
		last := scale <= minScale
		w := max(1, int(math.Round(float64(nw)*scale)))
		h := max(1, int(math.Round(float64(nh)*scale)))
		small := pyr.resize(w, h)
		skip, _, err := tooBig(small, 1.05)
		if err != nil {
			return frame{}, err
		}
		if !skip || last {
			data, err := encodePNG(small, budget)
			if err != nil {
				return frame{}, err
			}
			f.png, f.width, f.height = data, w, h
			f.attempts++
			if len(data) <= budget {
				f.fits = true
				break
			}
		}
		if last {
			break
		}
		next := scale * 0.8
		if scale > 0.5 && next < 0.5 {
			next = 0.5
		}
		scale = next
	}
	f.encodedBytes = len(f.png)
	return f, nil
}

// Screenshot captures the display and returns it as a PNG that fits the
// reply budget of the connection (opctx.PayloadBudget: max payload less
// the envelope allowance). width/height are the encoded size and native_*
// the captured size, the coordinate space of desktop_input. It is not
// consent-gated.
func (d *Desktop) Screenshot(ctx context.Context, _ *agentpb.DesktopScreenshotRequest) (*agentpb.DesktopScreenshotResponse, error) {
	img, err := d.target().capture(ctx)
	if err != nil {
		return nil, d.captureErr(err)
	}
	budget := opctx.PayloadBudget(ctx)
	f, err := fitPNG(img, budget)
	if err != nil {
		return nil, err
	}
	if !f.fits {
		return nil, agenterr.TooLarge(map[string]string{
			"op": "desktop_screenshot", "encoded_bytes": strconv.Itoa(len(f.png)), "max_payload": strconv.Itoa(opctx.MaxReply(ctx)),
		}, "screenshot is %d bytes at %dx%d (the smallest allowed size), over the reply budget of %d bytes", len(f.png), f.width, f.height, budget)
	}
	return &agentpb.DesktopScreenshotResponse{
		Png:          f.png,
		Width:        uint32(f.width),
		Height:       uint32(f.height),
		NativeWidth:  uint32(f.nativeW),
		NativeHeight: uint32(f.nativeH),
	}, nil
}

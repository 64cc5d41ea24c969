package desktop

import (
	"bytes"
	"image"
	"image/png"
	"math/rand/v2"
	"testing"
)

func noisy(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = uint8(rng.Uint32()), uint8(rng.Uint32()), uint8(rng.Uint32()), 255
	}
	return img
}

func TestFitPNGPassesThroughUnderBudgetOrUnbounded(t *testing.T) {
	img := noisy(64, 48)
	full, err := encodePNG(img, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, budget := range []int{0, len(full), len(full) + 1} {
		f, err := fitPNG(img, budget)
		if err != nil || !f.fits || !bytes.Equal(f.png, full) || f.width != 64 || f.height != 48 || f.nativeW != 64 || f.nativeH != 48 {
			t.Fatalf("budget %d: %dx%d native %dx%d fits %v err %v", budget, f.width, f.height, f.nativeW, f.nativeH, f.fits, err)
		}
	}
}

func TestFitPNGDownscalesKeepingAspectAndNativeSize(t *testing.T) {
	img := noisy(1600, 1200)
	full, _ := encodePNG(img, 0)
	budget := len(full) / 4
	f, err := fitPNG(img, budget)
	if err != nil {
		t.Fatal(err)
	}
	if !f.fits || len(f.png) > budget || f.nativeW != 1600 || f.nativeH != 1200 || f.width >= 1600 {
		t.Fatalf("fit: %dx%d (%d bytes, budget %d) native %dx%d", f.width, f.height, len(f.png), budget, f.nativeW, f.nativeH)
	}
	if f.width*3 != f.height*4 {
		t.Fatalf("aspect not kept: %dx%d", f.width, f.height)
	}
	dec, err := png.Decode(bytes.NewReader(f.png))
	if err != nil || dec.Bounds().Dx() != f.width || dec.Bounds().Dy() != f.height {
		t.Fatalf("decoded %v, %v", dec.Bounds(), err)
	}
}

func TestFitPNGStopsAtMinSide(t *testing.T) {
	img := noisy(1000, 500)
	f, err := fitPNG(img, 1000) // impossible for noise
	if err != nil {
		t.Fatal(err)
	}
	if f.fits || f.height != MinSide || f.width != 640 {
		t.Fatalf("min side: %dx%d fits %v", f.width, f.height, f.fits)
	}
	// A display smaller than MinSide is never upscaled.
	f, _ = fitPNG(noisy(200, 100), 100)
	if f.width != 200 || f.height != 100 || f.fits {
		t.Fatalf("small display: %dx%d fits %v", f.width, f.height, f.fits)
	}
}

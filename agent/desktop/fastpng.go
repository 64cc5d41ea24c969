package desktop

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"io"
	"sync"

	"github.com/klauspost/compress/zlib"
)

// Fast PNG encoding for screen captures. image/png at BestSpeed still runs
// its adaptive per-row filter search (five filters tried on every row) and
// stdlib deflate; on a 4K screen that alone is ~200 ms. Screens are opaque,
// so this encoder writes 8-bit RGB, filters every row with Sub (flat UI
// areas become zero runs; one cheap pass) and deflates with
// klauspost/compress at BestSpeed. The output is an ordinary PNG that any
// decoder reads; BenchmarkScreenshot keeps image/png as the baseline.

var zpool = sync.Pool{New: func() any {
	w, _ := zlib.NewWriterLevel(io.Discard, zlib.BestSpeed)
	return w
}}

// chunkWriter turns a byte stream into IDAT chunks of up to 256 KiB.
type chunkWriter struct {
	out *bytes.Buffer
	buf []byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := cap(c.buf) - len(c.buf)
		if room == 0 {
			c.flush()
			continue
		}
		k := min(room, len(p))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
	}
	return n, nil
}

func (c *chunkWriter) flush() {
	if len(c.buf) > 0 {
		writeChunk(c.out, "IDAT", c.buf)
		c.buf = c.buf[:0]
	}
}

func writeChunk(out *bytes.Buffer, typ string, data []byte) {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	copy(hdr[4:], typ)
	out.Write(hdr[:])
	out.Write(data)
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:8])
	crc.Write(data)
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	out.Write(sum[:])
}

// encodeFastPNG encodes an opaque RGBA image as an RGB PNG.
func encodeFastPNG(img *image.RGBA, sizeHint int) ([]byte, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := &bytes.Buffer{}
	out.Grow(max(sizeHint, 64<<10))
	out.WriteString("\x89PNG\r\n\x1a\n")
	var ihdr [13]byte
	binary.BigEndian.PutUint32(ihdr[0:4], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:8], uint32(h))
	ihdr[8], ihdr[9] = 8, 2 // 8-bit truecolor, no alpha
	writeChunk(out, "IHDR", ihdr[:])

	cw := &chunkWriter{out: out, buf: make([]byte, 0, 256<<10)}
	zw := zpool.Get().(*zlib.Writer)
	defer zpool.Put(zw)
	zw.Reset(cw)
	row := make([]byte, 1+3*w)
	row[0] = 1 // Sub
	for y := 0; y < h; y++ {
		src := img.Pix[(y)*img.Stride : y*img.Stride+4*w]
		var pr, pg, pb byte
		for x, i := 0, 1; x < w; x, i = x+1, i+3 {
			r, g, bl := src[4*x], src[4*x+1], src[4*x+2]
			row[i], row[i+1], row[i+2] = r-pr, g-pg, bl-pb
			pr, pg, pb = r, g, bl
		}
		if _, err := zw.Write(row); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	cw.flush()
	writeChunk(out, "IEND", nil)
	return out.Bytes(), nil
}

// halve downsamples src by 2 on both axes with a 2×2 box filter: an exact
// area average, and far cheaper than a general kernel.
func halve(src *image.RGBA) *image.RGBA {
	b := src.Bounds()
	w, h := b.Dx()/2, b.Dy()/2
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		r0 := src.Pix[(2*y)*src.Stride:]
		r1 := src.Pix[(2*y+1)*src.Stride:]
		d := dst.Pix[y*dst.Stride : y*dst.Stride+4*w]
		for x := 0; x < w; x++ {
			i, j := 8*x, 4*x
			d[j] = uint8((uint16(r0[i]) + uint16(r0[i+4]) + uint16(r1[i]) + uint16(r1[i+4]) + 2) >> 2)
			d[j+1] = uint8((uint16(r0[i+1]) + uint16(r0[i+5]) + uint16(r1[i+1]) + uint16(r1[i+5]) + 2) >> 2)
			d[j+2] = uint8((uint16(r0[i+2]) + uint16(r0[i+6]) + uint16(r1[i+2]) + uint16(r1[i+6]) + 2) >> 2)
			d[j+3] = 0xff
		}
	}
	return dst
}

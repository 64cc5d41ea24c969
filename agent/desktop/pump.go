package desktop

import (
	"context"
	"fmt"
	"hash/crc32"
	"image"
	"log/slog"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// FrameSink receives encoded desktop frames; *stream.Channel is one.
type FrameSink interface {
	Send(ctx context.Context, data []byte) error
}

// First-capture retries give a just-started Xvfb time to settle (relay.md §7).
const (
	firstCaptureTries = 20
	firstCaptureDelay = 100 * time.Millisecond
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// pump streams the display to a sink: at most one capture per tick, a PNG
// frame only when the pixels changed, and viewer input injected through
// inject (which enforces consent).
type pump struct {
	capture  func(ctx context.Context) (*image.RGBA, error)
	sink     FrameSink
	input    <-chan *agentpb.DesktopInput // nil: no viewer input
	inject   func(ctx context.Context, ev *agentpb.DesktopInput) error
	tick     <-chan time.Time
	maxFrame int
	log      *slog.Logger

	ready     chan struct{}       // closed once the first frame has been sent
	afterTick func(sent bool)     // test hook: called after each tick is handled
	sleep     func(time.Duration) // between first-capture tries

	last    uint64 // crc32c of the last sent frame's pixels, with its size
	hasLast bool
}

// run streams until ctx ends. It returns an error only when the first
// capture never succeeds or the first frame cannot be sent.
func (p *pump) run(ctx context.Context) error {
	if p.sleep == nil {
		p.sleep = time.Sleep
	}
	if err := p.first(ctx); err != nil {
		return err
	}
	close(p.ready)
	if p.input != nil {
		go p.injectLoop(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-p.tick:
			if !ok {
				return nil
			}
			sent := p.step(ctx)
			if p.afterTick != nil {
				p.afterTick(sent)
			}
		}
	}
}

// first sends the first frame, retrying the capture a few times.
func (p *pump) first(ctx context.Context) error {
	var err error
	for try := 0; try < firstCaptureTries; try++ {
		if try > 0 {
			p.sleep(firstCaptureDelay)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var img *image.RGBA
		if img, err = p.capture(ctx); err != nil {
			continue
		}
		return p.send(ctx, img, pixelSum(img))
	}
	return fmt.Errorf("desktop stream: first capture failed %d times: %w", firstCaptureTries, err)
}

// step captures once and sends a frame if the screen changed.
func (p *pump) step(ctx context.Context) bool {
	img, err := p.capture(ctx)
	if err != nil {
		p.log.Debug("desktop capture failed; frame skipped", "err", err)
		return false
	}
	sum := pixelSum(img)
	if p.hasLast && sum == p.last {
		return false
	}
	if err := p.send(ctx, img, sum); err != nil {
		p.log.Debug("desktop frame not sent", "err", err)
		return false
	}
	return true
}

func (p *pump) send(ctx context.Context, img *image.RGBA, sum uint64) error {
	f, err := fitPNG(img, p.maxFrame)
	if err != nil {
		return err
	}
	if err := p.sink.Send(ctx, f.png); err != nil {
		return err
	}
	p.last, p.hasLast = sum, true
	return nil
}

// injectLoop injects viewer input until the input channel closes or ctx
// ends; it runs apart from capture so a slow relay does not delay input.
func (p *pump) injectLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-p.input:
			if !ok {
				return
			}
			if err := p.inject(ctx, ev); err != nil {
				p.log.Debug("viewer input not injected", "err", err)
			}
		}
	}
}

// pixelSum is a cheap change detector: CRC-32C (hardware accelerated on
// amd64 and arm64, ~1 ms for 1080p) over every pixel, with the size.
func pixelSum(img *image.RGBA) uint64 {
	b := img.Bounds()
	var sum uint32
	if img.Stride == 4*b.Dx() {
		sum = crc32.Checksum(img.Pix[:img.Stride*b.Dy()], castagnoli)
	} else {
		for y := 0; y < b.Dy(); y++ {
			row := img.Pix[y*img.Stride : y*img.Stride+4*b.Dx()]
			sum = crc32.Update(sum, castagnoli, row)
		}
	}
	return uint64(sum) | uint64(b.Dx())<<32 | uint64(b.Dy())<<48
}

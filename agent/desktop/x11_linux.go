//go:build linux

package desktop

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"
	"log"
	"strconv"
	"strings"
	"sync"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/randr"
	"github.com/jezek/xgb/xproto"
	"github.com/jezek/xgb/xtest"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func init() {
	// xgb logs "could not get authority info" on every connect to a
	// server without an Xauthority (Xvfb): noise for the agent's stderr.
	xgb.Logger = log.New(io.Discard, "", 0)
}

// openScreen returns the X11 display name as a capture target; it
// connects lazily.
func openScreen(name string) screen { return &x11Screen{name: name} }

// isVirtualDisplay is agent.md §5.9's heuristic: display number ≥ 99.
func isVirtualDisplay(name string) bool {
	n, ok := displayNumber(name)
	return ok && n >= 99
}

// displayNumber is the N of "[host]:N[.S]".
func displayNumber(name string) (int, bool) {
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return 0, false
	}
	s := name[i+1:]
	if j := strings.IndexByte(s, '.'); j >= 0 {
		s = s[:j]
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// x11Screen is one X display reached over the X protocol. One connection
// is kept and re-made after an I/O error.
type x11Screen struct {
	name string

	mu    sync.Mutex
	c     *xgb.Conn
	root  xproto.Window
	randr bool
	// geometry of the captured area (the first active CRTC, else the root)
	x0, y0, w, h int
	kb           *keyboard
}

// conn returns a live connection, connecting if needed. The caller holds mu.
func (s *x11Screen) connLocked() (*xgb.Conn, error) {
	if s.c != nil {
		return s.c, nil
	}
	if s.name == "" {
		return nil, noDisplayf("no X display: DISPLAY is empty")
	}
	c, err := xgb.NewConnDisplay(s.name)
	if err != nil {
		return nil, noDisplayf(fmt.Sprintf("cannot connect to X display %s: %v", s.name, err))
	}
	if err := xtest.Init(c); err != nil {
		c.Close()
		return nil, noDisplayf(fmt.Sprintf("X display %s has no XTEST extension", s.name))
	}
	s.randr = randr.Init(c) == nil
	s.root = xproto.Setup(c).DefaultScreen(c).Root
	s.c = c
	s.kb = nil
	// Nobody selects events on this connection, but errors of unchecked
	// requests and MappingNotify still arrive; drain them so xgb's queue
	// never fills.
	go func() {
		for {
			ev, xerr := c.WaitForEvent()
			if ev == nil && xerr == nil {
				return
			}
		}
	}()
	return c, nil
}

// dropLocked forgets a connection after an error so the next call
// reconnects. The caller holds mu.
func (s *x11Screen) dropLocked(c *xgb.Conn) {
	if s.c == c && c != nil {
		c.Close()
		s.c = nil
		s.kb = nil
	}
}

// geometryLocked refreshes the captured area: the first RANDR CRTC with a
// size, else the root window.
func (s *x11Screen) geometryLocked(c *xgb.Conn) error {
	scr := xproto.Setup(c).DefaultScreen(c)
	s.x0, s.y0, s.w, s.h = 0, 0, int(scr.WidthInPixels), int(scr.HeightInPixels)
	if s.randr {
		res, err := randr.GetScreenResourcesCurrent(c, s.root).Reply()
		if err != nil {
			return err
		}
		for _, crtc := range res.Crtcs {
			ci, err := randr.GetCrtcInfo(c, crtc, res.ConfigTimestamp).Reply()
			if err != nil {
				return err
			}
			if ci.Width > 0 && ci.Height > 0 {
				s.x0, s.y0, s.w, s.h = int(ci.X), int(ci.Y), int(ci.Width), int(ci.Height)
				break
			}
		}
		return nil
	}
	// Without RANDR, a round trip proves the connection is alive.
	_, err := xproto.GetInputFocus(c).Reply()
	return err
}

// withConn runs f on a live connection, reconnecting once when the kept
// connection turns out to be dead.
func (s *x11Screen) withConn(f func(c *xgb.Conn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; ; attempt++ {
		c, err := s.connLocked()
		if err != nil {
			return err
		}
		err = f(c)
		if err == nil {
			return nil
		}
		var xe xgb.Error
		if errors.As(err, &xe) {
			return err // a protocol error is an answer: the connection is fine
		}
		s.dropLocked(c) // an I/O failure: reconnect once
		if attempt > 0 {
			return err
		}
	}
}

func (s *x11Screen) probe() (*agentpb.Display, error) {
	var d *agentpb.Display
	err := s.withConn(func(c *xgb.Conn) error {
		if err := s.geometryLocked(c); err != nil {
			return err
		}
		d = &agentpb.Display{Id: s.name, Width: uint32(s.w), Height: uint32(s.h), Virtual: isVirtualDisplay(s.name)}
		return nil
	})
	if err != nil && !errors.Is(err, errNoDisplay) {
		return nil, noDisplayf(fmt.Sprintf("X display %s: %v", s.name, err))
	}
	return d, err
}

func (s *x11Screen) capture(ctx context.Context) (*image.RGBA, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var img *image.RGBA
	err := s.withConn(func(c *xgb.Conn) error {
		if err := s.geometryLocked(c); err != nil {
			return err
		}
		if s.w <= 0 || s.h <= 0 {
			//lint:ignore ST1005 "X" is the window system's name
			return fmt.Errorf("X display %s reports an empty screen", s.name)
		}
		reply, err := xproto.GetImage(c, xproto.ImageFormatZPixmap, xproto.Drawable(s.root),
			int16(s.x0), int16(s.y0), uint16(s.w), uint16(s.h), 0xffffffff).Reply()
		if err != nil {
			return err
		}
		img, err = zpixmapToRGBA(xproto.Setup(c), reply.Depth, reply.Data, s.w, s.h)
		return err
	})
	return img, err
}

func (s *x11Screen) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(s.c)
}

// zpixmapToRGBA converts a ZPixmap GetImage reply of a TrueColor 24/32-bit
// visual into opaque RGBA.
func zpixmapToRGBA(setup *xproto.SetupInfo, depth byte, data []byte, w, h int) (*image.RGBA, error) {
	bpp, pad := 0, 32
	for _, f := range setup.PixmapFormats {
		if f.Depth == depth {
			bpp, pad = int(f.BitsPerPixel), int(f.ScanlinePad)
		}
	}
	if bpp != 32 && bpp != 24 {
		return nil, fmt.Errorf("unsupported X pixel format: depth %d, %d bits per pixel", depth, bpp)
	}
	stride := ((w*bpp + pad - 1) / pad) * pad / 8
	if len(data) < stride*(h-1)+w*bpp/8 {
		return nil, fmt.Errorf("short X image: %d bytes for %dx%d", len(data), w, h)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	msb := setup.ImageByteOrder == xproto.ImageOrderMSBFirst
	for y := 0; y < h; y++ {
		src := data[y*stride:]
		dst := img.Pix[y*img.Stride : y*img.Stride+4*w]
		switch {
		case bpp == 32 && !msb:
			// B G R X little-endian words → R G B A.
			for i := 0; i < len(dst); i += 4 {
				v := binary.LittleEndian.Uint32(src[i:])
				binary.LittleEndian.PutUint32(dst[i:], (v>>16)&0xff|v&0xff00|(v&0xff)<<16|0xff000000)
			}
		case bpp == 32:
			for i := 0; i < len(dst); i += 4 {
				dst[i], dst[i+1], dst[i+2], dst[i+3] = src[i+1], src[i+2], src[i+3], 0xff
			}
		case !msb:
			for i, j := 0, 0; i < len(dst); i, j = i+4, j+3 {
				dst[i], dst[i+1], dst[i+2], dst[i+3] = src[j+2], src[j+1], src[j], 0xff
			}
		default:
			for i, j := 0, 0; i < len(dst); i, j = i+4, j+3 {
				dst[i], dst[i+1], dst[i+2], dst[i+3] = src[j], src[j+1], src[j+2], 0xff
			}
		}
	}
	return img, nil
}

// displayName is the X display this screen talks to.
//
//lint:ignore U1000 used by inject_robotgo.go, which only cgo builds compile
func (s *x11Screen) displayName() string { return s.name }

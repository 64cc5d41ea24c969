//go:build linux && !(cgo && robotgo)

package desktop

import (
	"fmt"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/xproto"
	"github.com/jezek/xgb/xtest"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// newInjector returns the XTEST injector of an X11 target (pure Go).
func newInjector(s screen) (injector, error) {
	xs, ok := s.(*x11Screen)
	if !ok {
		return nil, fmt.Errorf("no X11 display")
	}
	return &xtestInjector{s: xs}, nil
}

// xtestInjector injects input with XTEST FakeInput on the root window.
type xtestInjector struct{ s *x11Screen }

// run performs f with a live connection, the keyboard mapping and the
// capture origin, then waits for the server to have processed it.
func (x *xtestInjector) run(f func(c *xgb.Conn, kb *keyboard) error) error {
	s := x.s
	return s.withConn(func(c *xgb.Conn) error {
		if s.kb == nil {
			kb, err := loadKeyboard(c)
			if err != nil {
				return err
			}
			s.kb = kb
		}
		if err := f(c, s.kb); err != nil {
			return err
		}
		// A round trip: every FakeInput above has been processed, and a
		// dead server is reported now.
		_, err := xproto.GetInputFocus(c).Reply()
		return err
	})
}

func (x *xtestInjector) fake(c *xgb.Conn, typ byte, detail byte, px, py int16) {
	xtest.FakeInput(c, typ, detail, 0, x.s.root, px, py, 0)
}

// motion moves the pointer to display pixel (x, y).
func (x *xtestInjector) motion(c *xgb.Conn, px, py int) {
	rx := clampI16(px + x.s.x0)
	ry := clampI16(py + x.s.y0)
	x.fake(c, xproto.MotionNotify, 0, rx, ry)
}

func clampI16(v int) int16 { return int16(max(-32768, min(32767, v))) }

func xbutton(b agentpb.PointerButton) byte {
	switch b {
	case agentpb.PointerButton_POINTER_BUTTON_MIDDLE:
		return 2
	case agentpb.PointerButton_POINTER_BUTTON_RIGHT:
		return 3
	}
	return 1
}

func (x *xtestInjector) pointer(px, py int, action agentpb.PointerAction, button agentpb.PointerButton) error {
	return x.run(func(c *xgb.Conn, _ *keyboard) error {
		x.motion(c, px, py)
		b := xbutton(button)
		switch action {
		case agentpb.PointerAction_POINTER_ACTION_DOWN:
			x.fake(c, xproto.ButtonPress, b, 0, 0)
		case agentpb.PointerAction_POINTER_ACTION_UP:
			x.fake(c, xproto.ButtonRelease, b, 0, 0)
		case agentpb.PointerAction_POINTER_ACTION_CLICK:
			x.fake(c, xproto.ButtonPress, b, 0, 0)
			x.fake(c, xproto.ButtonRelease, b, 0, 0)
		case agentpb.PointerAction_POINTER_ACTION_DOUBLE_CLICK:
			for i := 0; i < 2; i++ {
				x.fake(c, xproto.ButtonPress, b, 0, 0)
				x.fake(c, xproto.ButtonRelease, b, 0, 0)
			}
		}
		return nil
	})
}

func (x *xtestInjector) scroll(px, py, dx, dy int) error {
	return x.run(func(c *xgb.Conn, _ *keyboard) error {
		x.motion(c, px, py)
		clicks := func(n int, neg, pos byte) {
			b := pos
			if n < 0 {
				b, n = neg, -n
			}
			for i := 0; i < n; i++ {
				x.fake(c, xproto.ButtonPress, b, 0, 0)
				x.fake(c, xproto.ButtonRelease, b, 0, 0)
			}
		}
		clicks(dy, 4, 5)
		clicks(dx, 6, 7)
		return nil
	})
}

// locate finds (or binds) the keycode of ks.
func locate(c *xgb.Conn, kb *keyboard, ks xproto.Keysym) (keyLoc, error) {
	if loc, ok := kb.find(ks); ok {
		return loc, nil
	}
	return kb.bind(c, ks)
}

func (x *xtestInjector) key(k keyCombo, action agentpb.KeyAction) error {
	return x.run(func(c *xgb.Conn, kb *keyboard) error {
		ks := runeKeysym(k.char)
		if k.named != keyNone {
			ks = namedKeysyms[k.named]
		}
		loc, err := locate(c, kb, ks)
		if err != nil {
			return err
		}
		var held []xproto.Keycode
		for _, m := range k.mods {
			ml, err := locate(c, kb, namedKeysyms[modKey[m]])
			if err != nil {
				return err
			}
			held = append(held, ml.code)
		}
		if loc.shift && !k.hasMod(modShift) {
			sl, err := locate(c, kb, namedKeysyms[keyShift])
			if err != nil {
				return err
			}
			held = append(held, sl.code)
		}
		down := action != agentpb.KeyAction_KEY_ACTION_UP
		up := action != agentpb.KeyAction_KEY_ACTION_DOWN
		if down {
			for _, m := range held {
				x.fake(c, xproto.KeyPress, byte(m), 0, 0)
			}
			x.fake(c, xproto.KeyPress, byte(loc.code), 0, 0)
		}
		if up {
			x.fake(c, xproto.KeyRelease, byte(loc.code), 0, 0)
			for i := len(held) - 1; i >= 0; i-- {
				x.fake(c, xproto.KeyRelease, byte(held[i]), 0, 0)
			}
		}
		return nil
	})
}

func (x *xtestInjector) text(s string) error {
	return x.run(func(c *xgb.Conn, kb *keyboard) error {
		shiftLoc, err := locate(c, kb, namedKeysyms[keyShift])
		if err != nil {
			return err
		}
		for _, r := range s {
			loc, err := locate(c, kb, runeKeysym(r))
			if err != nil {
				return err
			}
			if loc.shift {
				x.fake(c, xproto.KeyPress, byte(shiftLoc.code), 0, 0)
			}
			x.fake(c, xproto.KeyPress, byte(loc.code), 0, 0)
			x.fake(c, xproto.KeyRelease, byte(loc.code), 0, 0)
			if loc.shift {
				x.fake(c, xproto.KeyRelease, byte(shiftLoc.code), 0, 0)
			}
		}
		return nil
	})
}

//go:build linux

package desktop

import (
	"github.com/jezek/xgb"
	"github.com/jezek/xgb/xproto"
)

// X11 keysyms of the named keys.
var namedKeysyms = map[namedKey]xproto.Keysym{
	keyEnter: 0xff0d, keyTab: 0xff09, keyEscape: 0xff1b, keyBackspace: 0xff08, keyDelete: 0xffff,
	keyInsert: 0xff63, keySpace: 0x20, keyLeft: 0xff51, keyUp: 0xff52, keyRight: 0xff53,
	keyDown: 0xff54, keyHome: 0xff50, keyEnd: 0xff57, keyPageUp: 0xff55, keyPageDown: 0xff56,
	keyCapsLock: 0xffe5, keyShift: 0xffe1, keyControl: 0xffe3, keyAlt: 0xffe9, keyMeta: 0xffeb,
}

func init() {
	for i := namedKey(0); i < 12; i++ {
		namedKeysyms[keyF1+i] = xproto.Keysym(0xffbe + uint32(i))
	}
}

// runeKeysym is the keysym that types r: Latin-1 code points are their
// own keysyms, other Unicode is 0x01000000+r; newline and tab are Return
// and Tab.
func runeKeysym(r rune) xproto.Keysym {
	switch {
	case r == '\n' || r == '\r':
		return 0xff0d
	case r == '\t':
		return 0xff09
	case r == '\b':
		return 0xff08
	case (r >= 0x20 && r <= 0x7e) || (r >= 0xa0 && r <= 0xff):
		return xproto.Keysym(r)
	}
	return xproto.Keysym(0x01000000 + uint32(r))
}

// keyLoc is where a keysym sits in the keyboard mapping: its keycode and
// whether Shift selects it (column 1).
type keyLoc struct {
	code  xproto.Keycode
	shift bool
}

// keyboard is the server's core keyboard mapping, with spare keycodes
// that get keysyms the layout lacks (how xdotool types arbitrary Unicode).
type keyboard struct {
	min     xproto.Keycode
	per     int
	syms    []xproto.Keysym // (keycode-min)*per + column
	spare   []xproto.Keycode
	nextSpr int
}

func loadKeyboard(c *xgb.Conn) (*keyboard, error) {
	setup := xproto.Setup(c)
	lo, hi := setup.MinKeycode, setup.MaxKeycode
	r, err := xproto.GetKeyboardMapping(c, lo, byte(hi-lo+1)).Reply()
	if err != nil {
		return nil, err
	}
	kb := &keyboard{min: lo, per: int(r.KeysymsPerKeycode), syms: r.Keysyms}
	for code := int(hi); code >= int(lo); code-- {
		empty := true
		for col := 0; col < kb.per; col++ {
			if kb.syms[(code-int(lo))*kb.per+col] != 0 {
				empty = false
				break
			}
		}
		if empty {
			kb.spare = append(kb.spare, xproto.Keycode(code))
		}
	}
	if len(kb.spare) == 0 {
		kb.spare = []xproto.Keycode{hi}
	}
	return kb, nil
}

// find locates ks, preferring the unshifted column.
func (kb *keyboard) find(ks xproto.Keysym) (keyLoc, bool) {
	for col := 0; col < 2 && col < kb.per; col++ {
		for i := 0; i*kb.per+col < len(kb.syms); i++ {
			if kb.syms[i*kb.per+col] == ks {
				return keyLoc{code: kb.min + xproto.Keycode(i), shift: col == 1}, true
			}
		}
	}
	return keyLoc{}, false
}

// bind maps ks onto the next spare keycode (both columns, so Shift does
// not matter) and returns it.
func (kb *keyboard) bind(c *xgb.Conn, ks xproto.Keysym) (keyLoc, error) {
	code := kb.spare[kb.nextSpr%len(kb.spare)]
	kb.nextSpr++
	row := make([]xproto.Keysym, kb.per)
	row[0] = ks
	if kb.per > 1 {
		row[1] = ks
	}
	if err := xproto.ChangeKeyboardMappingChecked(c, 1, code, byte(kb.per), row).Check(); err != nil {
		return keyLoc{}, err
	}
	copy(kb.syms[int(code-kb.min)*kb.per:], row)
	return keyLoc{code: code}, nil
}
